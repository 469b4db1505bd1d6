//! Unit tests of the store's names, specs and file copies.

use super::files::COPY_CHUNK;
use super::*;

#[test]
fn test_names_that_leave_the_store_are_refused() {
    for bad in [
        "", "..", ".", "../x", "a/b", "a@b", "-rf", ".hidden", "a b", "a\0b", "ä",
    ] {
        assert!(check_name("VM", bad).is_err(), "{bad:?} accepted");
    }
    assert!(check_name("VM", &"x".repeat(65)).is_err());
    for good in ["web1", "debian-12", "a.b", "snap:2026", "A_9", "a..b"] {
        check_name("VM", good).unwrap();
    }
}

#[test]
fn test_targets_parse_by_shape() {
    assert_eq!(
        Target::parse("debian").unwrap(),
        Target::Template("debian".into())
    );
    assert_eq!(
        Target::parse("web1/root").unwrap(),
        Target::Disk(DiskRef::new("web1", "root").unwrap())
    );
    assert_eq!(
        Target::parse("web1/root@s1").unwrap(),
        Target::Snapshot(SnapRef::new(DiskRef::new("web1", "root").unwrap(), "s1").unwrap())
    );
    for bad in ["a/b/c", "a/../b", "a/b@", "a/b@c@d", "@x", "/abs", "a/-b"] {
        assert!(Target::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn test_store_specs() {
    assert!(matches!(open("nfs:server"), Err(StorageError::BadStore(_))));
    assert!(matches!(
        open("dir:/nonexistent/fennec-store"),
        Err(StorageError::NoDirectory(_))
    ));
}

#[test]
fn test_sparse_copy_keeps_data_and_length() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = vec![0u8; 3 * COPY_CHUNK + 100];
    data[5] = 1;
    data[2 * COPY_CHUNK + 7] = 2;
    let src = dir.path().join("src");
    std::fs::write(&src, &data).unwrap();
    let dst = dir.path().join("dst");
    let mut seen = 0;
    copy_image(&src, &dst, &mut |n| seen = n).unwrap();
    assert_eq!(std::fs::read(&dst).unwrap(), data);
    assert_eq!(seen, data.len() as u64);
    assert!(copy_image(&src, &dst, &mut |_| {}).is_err(), "overwrote");
}
