//! The OCI front door's records on sled and PostgreSQL: aliases written once
//! and readable both ways, manifests stored once byte-exact with their
//! referrer entry, referrers listed in digest order a page at a time, a
//! referrer's blobs referenced by its subject's binding, the first bound tag.

use std::sync::Arc;

use amber_core::audit::Event;
use amber_core::{Digest, Tag};
use amber_server::blobs::Stored;
use amber_server::meta::{AuditStore, LinkStore, Meta, OciManifest, OciStore, RetentionStore, TagStore, Unlink};

use super::{audit_of, envelope, event, now, repo, signer};

fn manifest(n: u8, subject: Option<&str>, blobs: Vec<(Digest, u64)>) -> OciManifest {
    OciManifest {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        bytes: format!("{{\"n\":{n}}}").into_bytes(),
        subject: subject.map(str::to_owned),
        blobs,
        created_at: now(),
        view_of: None,
    }
}

async fn oci(meta: Arc<Meta>) {
    let s = signer();
    let r = repo("acme/oci");
    let blob = Digest::of(b"oci blob");
    // Random: aliases read are remembered process-wide (a fact about content).
    let sha = format!("sha256:{:064x}", rand::random::<u128>());
    // Aliases: the first writer wins, both ways.
    assert_eq!(meta.alias(&sha).await.unwrap(), None);
    meta.put_alias(&sha, &blob).await.unwrap();
    meta.put_alias(&sha, &Digest::of(b"another")).await.unwrap();
    assert_eq!(meta.alias(&sha).await.unwrap(), Some(blob));
    assert_eq!(meta.sha256_of(&blob).await.unwrap(), Some(sha.clone()));
    assert_eq!(meta.sha256_of(&Digest::of(b"unknown")).await.unwrap(), None);
    let sha512 = format!("sha512:{:0128x}", rand::random::<u128>());
    meta.put_alias(&sha512, &blob).await.unwrap();
    assert_eq!(meta.alias(&sha512).await.unwrap(), Some(blob));
    assert_eq!(meta.sha256_of(&blob).await.unwrap(), Some(sha.clone()), "the way back is sha256's only");

    // Manifests: stored once, byte-exact; the second put changes nothing.
    let subject = "sha256:".to_owned() + &"01".repeat(32);
    let first = manifest(1, None, vec![(blob, 8)]);
    let pushed = |d: &str| {
        audit_of(&s, vec![Event::OciManifestPushed { repository: r.clone(), digest: d.into(), media_type: "m".into() }])
    };
    assert_eq!(
        meta.put_oci_manifest(&r, &subject, &first, None, None, pushed(&subject)).await.unwrap(),
        Stored::Created
    );
    let before = meta.audit_entries(0, 1000).await.unwrap().len();
    let other = manifest(2, None, vec![]);
    assert_eq!(
        meta.put_oci_manifest(&r, &subject, &other, None, None, pushed(&subject)).await.unwrap(),
        Stored::AlreadyPresent
    );
    assert_eq!(
        meta.audit_entries(0, 1000).await.unwrap().len(),
        before,
        "nothing recorded for a manifest already there"
    );
    assert_eq!(meta.oci_manifest(&r, &subject).await.unwrap(), Some(first.clone()));
    assert_eq!(meta.oci_manifest(&repo("acme/other"), &subject).await.unwrap(), None, "per repository");

    // Referrers: listed by digest, a page at a time, only the subject's.
    let mut digests = Vec::new();
    for n in 0..5u8 {
        let digest = format!("sha256:{}", format!("{:02x}", 0x10 + n).repeat(32));
        let descriptor = format!("{{\"digest\":\"{digest}\"}}").into_bytes();
        let referrer = manifest(10 + n, Some(&subject), vec![]);
        meta.put_oci_manifest(&r, &digest, &referrer, Some(&descriptor), None, pushed(&digest)).await.unwrap();
        digests.push(digest);
    }
    let page = meta.referrers(&r, &subject, None, 3).await.unwrap();
    let rest = meta.referrers(&r, &subject, Some(&page[2].digest), 10).await.unwrap();
    let listed: Vec<String> = page.iter().chain(&rest).map(|x| x.digest.clone()).collect();
    assert_eq!(listed, digests);
    assert!(String::from_utf8(page[0].descriptor.clone()).unwrap().contains(&digests[0]));
    assert!(meta.referrers(&r, &digests[0], None, 10).await.unwrap().is_empty());

    // Bound tags: the first is kept.
    let (t1, t2): (Tag, Tag) = ("1.0".parse().unwrap(), "2.0".parse().unwrap());
    assert_eq!(meta.bound_tag(&r, &subject).await.unwrap(), None);
    meta.put_bound_tag(&r, &subject, &t1).await.unwrap();
    meta.put_bound_tag(&r, &subject, &t2).await.unwrap();
    assert_eq!(meta.bound_tag(&r, &subject).await.unwrap(), Some(t1.clone()));

    // A referrer kept with a binding: its blob is referenced while the tag is live.
    let signature = Digest::of(b"signature");
    meta.link_blob(&r, &signature, 9, None, audit_of(&s, event())).await.unwrap();
    let bound = Digest::of(b"amber manifest");
    let bind = audit_of(&s, vec![Event::TagBound { repository: r.clone(), tag: t1.clone(), digest: bound }]);
    meta.bind_tag(&r, &t1, &bound, &envelope(7).into(), &[], now(), bind).await.unwrap();
    let kept = manifest(40, Some(&subject), vec![(signature, 9)]);
    let kept_digest = "sha256:".to_owned() + &"40".repeat(32);
    meta.put_oci_manifest(&r, &kept_digest, &kept, Some(b"{}"), Some((&t1, &bound)), pushed(&kept_digest))
        .await
        .unwrap();
    let later = now() + time::Duration::hours(1);
    assert_eq!(meta.unlink_blob(&r, &signature, later, audit_of(&s, event())).await.unwrap(), Unlink::Referenced);
}

on_both_stores!(oci);
