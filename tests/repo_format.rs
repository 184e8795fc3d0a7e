//! Repository format 3: one derived key per purpose of the keyed hash, records bound to their
//! name, packs named by their blob table, CRC-32C file checksums; formats 1 and 2 still work.

use std::os::unix::fs::PermissionsExt;

use crate::common::env::{Backend, TestEnv, json, stderr};

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn first_bytes(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap()[..8].to_vec()
}

fn any_file_in(dir: std::path::PathBuf) -> std::path::PathBuf {
    std::fs::read_dir(dir).unwrap().next().unwrap().unwrap().path()
}

/// Every format backs up, deduplicates, restores and verifies, and writes the objects of its
/// own format (format 3: version 4 packs and `RADDREC2` records; older: version 1 packs and
/// `RADDREC1`), so an existing repository keeps what older restore hosts can read.
#[test]
fn every_format_round_trips_and_writes_its_own_objects() {
    for format in [1u32, 2, 3] {
        let env = TestEnv::new(Backend::Local);
        if format < 3 {
            env.make_format(format);
        }
        let src = env.path().join("tree");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("a"), noise(1 << 20, 7)).unwrap();
        std::fs::write(src.join("small"), b"small file").unwrap();
        let first = json(&env.radd_push(&["--json", "backup", "fs", src.to_str().unwrap()]));
        std::fs::write(src.join("b"), noise(1 << 20, 7)).unwrap();
        let second = json(&env.radd_push(&["--json", "backup", "fs", "--full-read", src.to_str().unwrap()]));
        assert_eq!(second["new_bytes"], 0, "format {format}: same content, same ids: {second:#}");
        let target = env.path().join("back");
        let id = second["snapshot_id"].as_str().unwrap();
        let restore = env.radd(&["restore", id, "--target", target.to_str().unwrap()]);
        assert!(restore.status.success(), "format {format}: {}", stderr(&restore));
        let restored = target.join(src.strip_prefix("/").unwrap());
        assert_eq!(std::fs::read(restored.join("b")).unwrap(), noise(1 << 20, 7), "format {format}");
        assert_eq!(std::fs::read(restored.join("small")).unwrap(), b"small file");
        let verify = env.radd(&["verify", "--read-data"]);
        assert!(verify.status.success(), "format {format}: {}", stderr(&verify));
        assert!(first["snapshot_id"].is_string());

        let pack = first_bytes(&any_file_in(env.local_object("packs")));
        let record = first_bytes(&env.local_object(&format!("snapshots/{id}")));
        let (pack_magic, record_magic): (&[u8], &[u8]) =
            if format == 3 { (b"RADDOBJ4", b"RADDREC2") } else { (b"RADDOBJ1", b"RADDREC1") };
        assert_eq!(pack, pack_magic, "format {format} pack");
        assert_eq!(record, record_magic, "format {format} record");
    }
}

/// A format-3 restore checks every blob against its id: a pack replaced by one that decrypts
/// fine (encrypted to the repository's public recipient, as anyone with the bucket can) but
/// holds other bytes fails the restore, naming the pack.
#[test]
fn a_replaced_pack_that_decrypts_fine_fails_the_restore() {
    let env = TestEnv::new(Backend::Local);
    let src = env.path().join("tree");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), noise(300 << 10, 3)).unwrap();
    let backup = json(&env.radd_push(&["--json", "backup", "fs", src.to_str().unwrap()]));
    let id = backup["snapshot_id"].as_str().unwrap();
    // The largest pack holds the file's chunks; rebuild it with every byte flipped, keeping its
    // header (name and digest) and sealing it properly to the repository's recipients.
    let pack = std::fs::read_dir(env.local_object("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let stored = std::fs::read(&pack).unwrap();
    let identity = radd::crypto::Identity::load(&env.path().join("identity.key")).unwrap();
    let name = format!("packs/{}", pack.file_name().unwrap().to_str().unwrap());
    let plaintext = radd::codec::open_unhashed(radd::codec::ObjectKind::Pack, &stored, &identity, &name).unwrap();
    let forged: Vec<u8> = plaintext.iter().map(|b| !b).collect();
    let digest = radd::codec::header_digest(&stored, &name).unwrap();
    let sealed = radd::codec::seal_blob_table(&forged, digest, &identity.recipients(), 1, &name).unwrap();
    std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&pack, sealed).unwrap();

    let target = env.path().join("back");
    let restore = env.radd(&["restore", id, "--target", target.to_str().unwrap()]);
    assert!(!restore.status.success(), "a forged pack must not restore");
    let err = stderr(&restore);
    assert!(err.contains("does not match its id") && err.contains(&name), "{err}");
}

/// The blob-id oracle of formats 1 and 2 (docs/design.md §13.4): bytes an attacker gets backed
/// up as one blob give them a valid key-set MAC, because both are the same keyed hash. They
/// forge `keys/set-1` adding their own recipient. Format 2 accepts it (which shows the forgery
/// is real); format 3, whose MACs and ids have separate derived keys, refuses it.
#[test]
fn a_key_set_forged_from_a_blob_id_is_refused_in_format_3() {
    for format in [2u32, 3] {
        let env = TestEnv::new(Backend::Local);
        if format == 2 {
            env.make_format(2);
        }
        let ours = json(&env.radd_push(&["--json", "key", "list"]));
        let attacker = age::x25519::Identity::generate().to_public().to_string();
        let mut recipients: Vec<String> =
            ours.as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect();
        recipients.push(attacker.clone());
        let sealed_id_key = "00";
        let mac_input = format!("radd key set 1\n{}\n{sealed_id_key}", recipients.join("\n"));
        // The attacker's "upload": a small file holding exactly those bytes, backed up.
        let src = env.path().join("uploads");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("innocent.txt"), &mac_input).unwrap();
        let backup = env.radd_push(&["--json", "backup", "fs", src.to_str().unwrap()]);
        assert!(backup.status.success(), "{}", stderr(&backup));
        // Blob ids are in the plaintext index: try every blob of that length as the MAC.
        let mut candidates = Vec::new();
        for entry in std::fs::read_dir(env.local_object("index")).unwrap() {
            let body = std::fs::read(entry.unwrap().path()).unwrap();
            let index = radd::snapshot::IndexFile::decode(&body[40..]).unwrap();
            for pack in index.packs {
                for (id, _, length) in pack.blobs {
                    if length as usize == mac_input.len() {
                        candidates.push(id.to_string());
                    }
                }
            }
        }
        assert!(!candidates.is_empty(), "the uploaded file is one blob of the index");
        let mut accepted = false;
        for mac in &candidates {
            let set = serde_json::json!({"recipients": recipients, "id_key": sealed_id_key, "mac": mac});
            let path = env.local_object("keys/set-1");
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
            std::fs::write(&path, serde_json::to_vec(&set).unwrap()).unwrap();
            let listed = env.radd_push(&["--json", "key", "list"]);
            if listed.status.success() {
                assert!(String::from_utf8_lossy(&listed.stdout).contains(&attacker));
                accepted = true;
            } else {
                assert!(stderr(&listed).contains("keys/set-1"), "{}", stderr(&listed));
            }
        }
        assert_eq!(accepted, format == 2, "format {format}: forged key set accepted = {accepted}");
    }
}

/// Format 3 records are bound to their name: a snapshot record copied under another snapshot's
/// name does not authenticate there.
#[test]
fn a_record_copied_to_another_name_fails_in_format_3() {
    let env = TestEnv::new(Backend::Local);
    let src = env.path().join("tree");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), b"content").unwrap();
    let backup = json(&env.radd_push(&["--json", "backup", "fs", src.to_str().unwrap()]));
    let id = backup["snapshot_id"].as_str().unwrap();
    let original = env.local_object(&format!("snapshots/{id}"));
    let copy_name = format!("{}-deadbeef", &id[..id.len() - 9]);
    std::fs::copy(&original, env.local_object(&format!("snapshots/{copy_name}"))).unwrap();
    let target = env.path().join("back");
    let restore = env.radd(&["restore", &copy_name, "--target", target.to_str().unwrap()]);
    assert!(!restore.status.success(), "a record under another name must not restore");
    let err = stderr(&restore);
    assert!(err.contains("authentication failed") || err.contains(&copy_name), "{err}");
}
