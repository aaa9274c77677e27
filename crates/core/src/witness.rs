//! Witnesses of the log (C2SP tlog-witness and tlog-cosignature): their
//! verifier keys, the Ed25519 cosignatures (`cosignature/v1`, timestamped)
//! they add to a checkpoint, and the policy a client requires of a
//! checkpoint, in Sigsum's policy syntax with signed-note keys:
//!
//! ```text
//! log VKEY [URL]
//! witness NAME VKEY [URL]
//! group NAME all|any|K MEMBER...
//! quorum NAME            # a witness, a group, or `none`
//! ```
//!
//! One statement a line, `#` comments. A group's members are witnesses or
//! groups defined before it; fewer valid cosignatures than the quorum fails.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::Digest as _;

/// The signature type of an Ed25519 cosigner's verifier key.
pub const COSIGNATURE_ED25519: u8 = 0x04;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WitnessError {
    #[error("witness key {0:?}: {1}")]
    Key(String, String),
    #[error("policy line {0}: {1}")]
    Policy(usize, String),
    #[error("{0}")]
    Quorum(String),
}

/// A witness: its name and Ed25519 cosigner key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Witness {
    pub name: String,
    pub key: VerifyingKey,
    pub key_id: [u8; 4],
    pub url: Option<String>,
}

/// `SHA-256(name || "\n" || 0x04 || key)[:4]`.
pub fn cosigner_key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut hasher = sha2::Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update([COSIGNATURE_ED25519]);
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

impl Witness {
    /// From its verifier key `NAME+HEXID+base64(0x04 || key)`.
    pub fn from_vkey(vkey: &str, url: Option<String>) -> Result<Self, WitnessError> {
        let bad = |why: &str| WitnessError::Key(vkey.to_owned(), why.to_owned());
        // A name holds no `+`; the base64 key may.
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(hex_id), Some(encoded)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("a verifier key is NAME+HEXID+KEY"));
        };
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
            return Err(bad("the name is empty or holds a space or +"));
        }
        let bytes = B64.decode(encoded).map_err(|_| bad("the key is not base64"))?;
        let [kind, rest @ ..] = bytes.as_slice() else { return Err(bad("the key is empty")) };
        if *kind != COSIGNATURE_ED25519 {
            return Err(bad("not an Ed25519 cosigner key (type 0x04)"));
        }
        let raw: [u8; 32] = rest.try_into().map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| bad("not an Ed25519 public key"))?;
        let key_id = cosigner_key_id(name, &key);
        let hex: String = key_id.iter().map(|b| format!("{b:02x}")).collect();
        if hex_id != hex {
            return Err(bad("its key id does not match its name and key"));
        }
        Ok(Self { name: name.to_owned(), key, key_id, url })
    }

    /// Its verifier key, `NAME+HEXID+base64(0x04 || key)`.
    pub fn vkey(&self) -> String {
        let hex: String = self.key_id.iter().map(|b| format!("{b:02x}")).collect();
        let mut raw = vec![COSIGNATURE_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{hex}+{}", self.name, B64.encode(raw))
    }

    /// The timestamp of a valid cosignature by this witness of `body` (the
    /// checkpoint's text, its final newline included) in signature line
    /// `line` (`— NAME base64(...)`), if it is one.
    pub fn verify_line(&self, body: &str, line: &str) -> Option<u64> {
        let rest = line.strip_prefix("\u{2014} ")?;
        let (name, encoded) = rest.split_once(' ')?;
        if name != self.name {
            return None;
        }
        let bytes = B64.decode(encoded.trim_end()).ok()?;
        if bytes.len() != 4 + 8 + 64 || bytes[..4] != self.key_id {
            return None;
        }
        let timestamp = u64::from_be_bytes(bytes[4..12].try_into().ok()?);
        if timestamp > i64::MAX as u64 {
            return None;
        }
        let signature = Signature::from_bytes(bytes[12..].try_into().ok()?);
        let message = format!("cosignature/v1\ntime {timestamp}\n{body}");
        self.key.verify_strict(message.as_bytes(), &signature).ok().map(|()| timestamp)
    }
}

/// The body of a signed note (text up to the blank line, with its final
/// newline) and its signature lines.
pub fn split_note(note: &str) -> Option<(&str, Vec<&str>)> {
    let at = note.find("\n\n")?;
    let (body, signatures) = (&note[..=at], &note[at + 2..]);
    Some((body, signatures.lines().filter(|l| !l.is_empty()).collect()))
}

/// Which of `witnesses` validly cosigned `note`.
pub fn cosigners<'a>(note: &str, witnesses: impl IntoIterator<Item = &'a Witness>) -> BTreeSet<String> {
    let Some((body, lines)) = split_note(note) else { return BTreeSet::new() };
    witnesses
        .into_iter()
        .filter(|w| lines.iter().any(|line| w.verify_line(body, line).is_some()))
        .map(|w| w.name.clone())
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Rule {
    All,
    Any,
    AtLeast(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Group {
    rule: Rule,
    members: Vec<String>,
}

/// A policy requiring `quorum` of `witnesses`, in the policy syntax.
pub fn policy_text(witnesses: &[Witness], quorum: usize) -> String {
    let mut text = String::from("# The witnesses this store asks to cosign its log, and how many must.\n");
    for (n, w) in witnesses.iter().enumerate() {
        let url = w.url.as_deref().map(|u| format!(" {u}")).unwrap_or_default();
        text.push_str(&format!("witness w{n} {}{url}\n", w.vkey()));
    }
    if witnesses.is_empty() {
        text.push_str("quorum none\n");
    } else {
        let members: Vec<String> = (0..witnesses.len()).map(|n| format!("w{n}")).collect();
        text.push_str(&format!("group witnesses {quorum} {}\nquorum witnesses\n", members.join(" ")));
    }
    text
}

/// A client's witness policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The log keys it names (`log VKEY`), signed-note verifier keys.
    pub logs: Vec<String>,
    pub witnesses: BTreeMap<String, Witness>,
    groups: BTreeMap<String, Group>,
    /// `None` for `quorum none`.
    quorum: Option<String>,
}

impl Policy {
    pub fn parse(text: &str) -> Result<Self, WitnessError> {
        let mut policy = Self { logs: Vec::new(), witnesses: BTreeMap::new(), groups: BTreeMap::new(), quorum: None };
        let mut quorum_seen = false;
        for (n, raw) in text.lines().enumerate() {
            let n = n + 1;
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let err = |why: String| WitnessError::Policy(n, why);
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["log", vkey] | ["log", vkey, _] => policy.logs.push((*vkey).to_owned()),
                ["witness", name, vkey, rest @ ..] if rest.len() <= 1 => {
                    let witness = Witness::from_vkey(vkey, rest.first().map(|u| (*u).to_owned()))
                        .map_err(|e| err(e.to_string()))?;
                    policy.define(name, n)?;
                    policy.witnesses.insert((*name).to_owned(), witness);
                }
                ["group", name, rule, members @ ..] if !members.is_empty() => {
                    let rule = match *rule {
                        "all" => Rule::All,
                        "any" => Rule::Any,
                        k => match k.parse::<usize>() {
                            Ok(k) if (1..=members.len()).contains(&k) => Rule::AtLeast(k),
                            _ => {
                                return Err(err(format!(
                                    "group {name}: {k:?} is not all, any or 1..={}",
                                    members.len()
                                )));
                            }
                        },
                    };
                    for member in members {
                        if !policy.witnesses.contains_key(*member) && !policy.groups.contains_key(*member) {
                            return Err(err(format!("group {name}: {member} is not a witness or group defined above")));
                        }
                    }
                    policy.define(name, n)?;
                    let members = members.iter().map(|m| (*m).to_owned()).collect();
                    policy.groups.insert((*name).to_owned(), Group { rule, members });
                }
                ["quorum", name] => {
                    if quorum_seen {
                        return Err(err("a second quorum".into()));
                    }
                    quorum_seen = true;
                    if *name != "none" {
                        if !policy.witnesses.contains_key(*name) && !policy.groups.contains_key(*name) {
                            return Err(err(format!("quorum {name} is not a witness or group defined above")));
                        }
                        policy.quorum = Some((*name).to_owned());
                    }
                }
                _ => {
                    return Err(err(format!(
                        "{line:?} is not log, witness, group or quorum as the policy syntax has them"
                    )));
                }
            }
        }
        if !quorum_seen {
            return Err(WitnessError::Policy(0, "no quorum line".into()));
        }
        Ok(policy)
    }

    fn define(&self, name: &str, n: usize) -> Result<(), WitnessError> {
        if name == "none" || self.witnesses.contains_key(name) || self.groups.contains_key(name) {
            return Err(WitnessError::Policy(n, format!("{name} is defined twice (or is `none`)")));
        }
        Ok(())
    }

    /// `signed`: the witnesses' labels in this policy that cosigned.
    fn satisfied(&self, name: &str, signed: &BTreeSet<String>) -> bool {
        if self.witnesses.contains_key(name) {
            return signed.contains(name);
        }
        let Some(group) = self.groups.get(name) else { return false };
        let met = group.members.iter().filter(|m| self.satisfied(m, signed)).count();
        match group.rule {
            Rule::All => met == group.members.len(),
            Rule::Any => met >= 1,
            Rule::AtLeast(k) => met >= k,
        }
    }

    /// Checks that `note`'s cosignatures meet the quorum; names the
    /// witnesses that cosigned, or says which are missing.
    pub fn check(&self, note: &str) -> Result<BTreeSet<String>, WitnessError> {
        let by_key = cosigners(note, self.witnesses.values());
        let signed: BTreeSet<String> =
            self.witnesses.iter().filter(|(_, w)| by_key.contains(&w.name)).map(|(label, _)| label.clone()).collect();
        match &self.quorum {
            None => Ok(signed),
            Some(quorum) if self.satisfied(quorum, &signed) => Ok(signed),
            Some(quorum) => {
                let missing: Vec<&str> =
                    self.witnesses.keys().filter(|w| !signed.contains(*w)).map(String::as_str).collect();
                Err(WitnessError::Quorum(format!(
                    "the checkpoint does not meet quorum {quorum}: no valid cosignature from {}",
                    missing.join(", ")
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer as _, SigningKey};

    const BODY: &str = "example.com/log\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    fn witness(name: &str, seed: u8) -> (Witness, SigningKey) {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let id = cosigner_key_id(name, &key.verifying_key());
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let mut raw = vec![COSIGNATURE_ED25519];
        raw.extend_from_slice(key.verifying_key().as_bytes());
        let vkey = format!("{name}+{hex}+{}", B64.encode(raw));
        (Witness::from_vkey(&vkey, None).unwrap(), key)
    }

    fn cosign(w: &Witness, key: &SigningKey, body: &str, timestamp: u64) -> String {
        let signature = key.sign(format!("cosignature/v1\ntime {timestamp}\n{body}").as_bytes());
        let mut bytes = w.key_id.to_vec();
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&signature.to_bytes());
        format!("\u{2014} {} {}\n", w.name, B64.encode(bytes))
    }

    fn vkey_of(w: &Witness) -> String {
        let hex: String = w.key_id.iter().map(|b| format!("{b:02x}")).collect();
        let mut raw = vec![COSIGNATURE_ED25519];
        raw.extend_from_slice(w.key.as_bytes());
        format!("{}+{hex}+{}", w.name, B64.encode(raw))
    }

    #[test]
    fn cosignatures_verify_and_altered_ones_do_not() {
        let (w, key) = witness("witness.example/w1", 1);
        let line = cosign(&w, &key, BODY, 1_679_315_147);
        assert_eq!(w.verify_line(BODY, line.trim_end()), Some(1_679_315_147));
        assert_eq!(w.verify_line(&BODY.replace('5', "6"), line.trim_end()), None);
        let (other, _) = witness("witness.example/w2", 2);
        assert_eq!(other.verify_line(BODY, line.trim_end()), None);
        let note = format!("{BODY}\n\u{2014} example.com/log AAAA\n{line}");
        assert_eq!(cosigners(&note, [&w, &other]), BTreeSet::from([w.name]));
    }

    #[test]
    fn a_vkey_of_the_wrong_type_or_id_is_refused() {
        let (w, _) = witness("w1", 3);
        let good = vkey_of(&w);
        assert!(Witness::from_vkey(&good, None).is_ok());
        assert!(Witness::from_vkey(&good.replacen("w1+", "w2+", 1), None).is_err(), "the id commits to the name");
        let mut raw = vec![0x01];
        raw.extend_from_slice(w.key.as_bytes());
        let note_key = format!("w1+00000000+{}", B64.encode(raw));
        assert!(Witness::from_vkey(&note_key, None).is_err());
    }

    #[test]
    fn policies_need_their_quorum() {
        let (a, ka) = witness("a.example/w", 4);
        let (b, kb) = witness("b.example/w", 5);
        let (c, _) = witness("c.example/w", 6);
        let text = format!(
            "# three witnesses, two of them\nlog example.com/log+01234567+AQ== https://log\nwitness A {}\nwitness B {} https://b\nwitness C {}\ngroup two 2 A B C\nquorum two\n",
            vkey_of(&a),
            vkey_of(&b),
            vkey_of(&c)
        );
        let policy = Policy::parse(&text).unwrap();
        let one = format!("{BODY}\n{}", cosign(&a, &ka, BODY, 1));
        let err = policy.check(&one).unwrap_err().to_string();
        assert!(err.contains("quorum two") && err.contains("B") && err.contains("C"), "{err}");
        let two = format!("{one}{}", cosign(&b, &kb, BODY, 2));
        assert_eq!(policy.check(&two).unwrap().len(), 2);
        let none = Policy::parse(&format!("witness A {}\nquorum none\n", vkey_of(&a))).unwrap();
        assert!(none.check(BODY).is_ok());
        for bad in [
            "quorum X\n".to_owned(),
            format!("witness A {}\nwitness A {}\nquorum A\n", vkey_of(&a), vkey_of(&a)),
            format!("witness A {}\ngroup g 3 A\nquorum g\n", vkey_of(&a)),
            format!("witness A {}\n", vkey_of(&a)),
            "frobnicate\nquorum none\n".to_owned(),
        ] {
            assert!(Policy::parse(&bad).is_err(), "{bad}");
        }
    }
}
