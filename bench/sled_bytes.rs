//! Where an embedded store's bytes go: every sled tree's entries, key and
//! value bytes, against the directory's size on disk. The server must be
//! stopped (sled locks its directory).
//!
//!     cargo run --release --example sled-bytes -- DATA_DIR/meta

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: sled-bytes DIR (a stopped amberd's DATA_DIR/meta)")?;
    let db = sled::Config::new().path(&dir).cache_capacity(16 << 20).open()?;
    let (mut entries, mut logical) = (0u64, 0u64);
    println!("{:18} {:>10} {:>12} {:>12} {:>9}", "tree", "entries", "key bytes", "value bytes", "per entry");
    let mut names = db.tree_names();
    names.sort();
    for name in names {
        let tree = db.open_tree(&name)?;
        let (mut n, mut keys, mut values) = (0u64, 0u64, 0u64);
        for item in tree.iter() {
            let (k, v) = item?;
            n += 1;
            keys += k.len() as u64;
            values += v.len() as u64;
        }
        if n == 0 {
            continue;
        }
        let label = String::from_utf8_lossy(&name).replace("__sled__default", "(default)");
        println!("{label:18} {n:>10} {keys:>12} {values:>12} {:>9}", (keys + values) / n);
        entries += n;
        logical += keys + values;
    }
    let mut on_disk = 0u64;
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            use std::os::unix::fs::MetadataExt;
            on_disk += entry.metadata()?.blocks() * 512;
        }
    }
    println!(
        "{entries} entries, {logical} logical bytes, {on_disk} bytes on disk ({:.1}x)",
        on_disk as f64 / logical.max(1) as f64
    );
    Ok(())
}
