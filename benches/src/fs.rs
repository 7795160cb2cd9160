//! Which file system a run's data directory is on, for the record.
//!
//! On-disk figures depend on it far more than on the server: ext4 without
//! a journal skips inodes freed in the last minutes when it allocates new
//! ones, so a run right after another (whose data directory was deleted)
//! paid up to twice the CPU per job (docs/BENCHMARKS.md, "Session 17"),
//! while a journaled ext4 and tmpfs do not. The harness names the file
//! system beside its figures so that they are compared like with like.

use std::path::{Component, Path, PathBuf};

/// One line of `/proc/self/mountinfo`: where, what type, from which device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount point.
    pub point: PathBuf,
    /// The file system type (`ext4`, `tmpfs`…).
    pub fs_type: String,
    /// The mount source (`/dev/vda`, `tmpfs`…).
    pub source: String,
    /// The device's `major:minor` (`254:0`…).
    pub device: String,
}

/// The file system `path` is on, as "tmpfs", "ext4 without a journal",
/// "ext4 with a journal", or the type alone; "unknown" when it cannot be
/// told (not Linux, no `/proc`).
#[must_use]
pub fn describe(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(info) => describe_with(&info, Path::new("/sys"), &path),
        Err(_) => "unknown".into(),
    }
}

/// [`describe`] of the absolute `path` from the text of a mountinfo and a
/// sysfs root.
#[must_use]
pub fn describe_with(mountinfo: &str, sys: &Path, path: &Path) -> String {
    let Some(mount) = mount_of(mountinfo, path) else {
        return "unknown".into();
    };
    if mount.fs_type != "ext4" {
        return mount.fs_type;
    }
    // ext4 names each mounted device under fs/ext4 by its kernel name
    // (`dm-0` where the source says `/dev/mapper/root`), which
    // dev/block/<major:minor> links to; `journal_task` reads `<none>` when
    // the file system has no journal.
    let device = std::fs::read_link(sys.join("dev/block").join(&mount.device))
        .ok()
        .and_then(|link| link.file_name().map(|d| d.to_string_lossy().into_owned()))
        .or_else(|| {
            Path::new(&mount.source)
                .file_name()
                .map(|d| d.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    match std::fs::read_to_string(sys.join("fs/ext4").join(device).join("journal_task")) {
        Ok(task) if task.trim() == "<none>" => "ext4 without a journal".into(),
        Ok(_) => "ext4 with a journal".into(),
        Err(_) => "ext4".into(),
    }
}

/// The mount of `mountinfo` (the text of `/proc/self/mountinfo`) that holds
/// the absolute `path`: the one with the longest mount point that is a
/// prefix of it, the last such line winning (a later mount hides an earlier
/// one at the same point).
#[must_use]
pub fn mount_of(mountinfo: &str, path: &Path) -> Option<Mount> {
    let mut best: Option<Mount> = None;
    for line in mountinfo.lines() {
        // id parent major:minor root point options [optional…] - type source super
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let mut after = after.split(' ');
        let mut before = before.split(' ');
        let (Some(device), Some(point), Some(fs_type), Some(source)) =
            (before.nth(2), before.nth(1), after.next(), after.next())
        else {
            continue;
        };
        let point = PathBuf::from(unescape(point));
        if !path.starts_with(&point) {
            continue;
        }
        let depth = |p: &Path| p.components().filter(|c| *c != Component::RootDir).count();
        if best
            .as_ref()
            .is_none_or(|b| depth(&point) >= depth(&b.point))
        {
            best = Some(Mount {
                point,
                fs_type: fs_type.to_owned(),
                source: unescape(source),
                device: device.to_owned(),
            });
        }
    }
    best
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
25 22 0:21 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw
40 22 7:0 / /mnt/a\\040b rw,relatime shared:20 - ext4 /dev/loop0 rw
41 22 0:30 / /mnt/over rw - ext4 /dev/loop1 rw
42 22 0:31 / /mnt/over rw - xfs /dev/loop2 rw
";

    #[test]
    fn the_deepest_mount_holding_the_path_wins() {
        let m = mount_of(INFO, Path::new("/dev/shm/bench/run")).unwrap();
        assert_eq!((m.fs_type.as_str(), m.source.as_str()), ("tmpfs", "tmpfs"));
        let m = mount_of(INFO, Path::new("/tmp/i2m")).unwrap();
        assert_eq!(
            (m.fs_type.as_str(), m.source.as_str()),
            ("ext4", "/dev/vda")
        );
        // A name that only starts like a mount point is not under it.
        let m = mount_of(INFO, Path::new("/dev/shmx")).unwrap();
        assert_eq!(m.point, PathBuf::from("/"));
    }

    #[test]
    fn escaped_mount_points_match_and_the_later_of_two_mounts_hides_the_first() {
        let m = mount_of(INFO, Path::new("/mnt/a b/data")).unwrap();
        assert_eq!(
            (m.source.as_str(), m.device.as_str()),
            ("/dev/loop0", "7:0")
        );
        let m = mount_of(INFO, Path::new("/mnt/over/x")).unwrap();
        assert_eq!(m.fs_type, "xfs");
    }

    #[test]
    fn a_mapped_device_is_found_by_its_numbers() {
        let info = "30 1 253:2 / /srv rw,relatime - ext4 /dev/mapper/vg-srv rw\n";
        let m = mount_of(info, Path::new("/srv/data")).unwrap();
        assert_eq!(
            (m.source.as_str(), m.device.as_str()),
            ("/dev/mapper/vg-srv", "253:2")
        );
    }

    /// A sysfs root with `device` at `numbers` (`dev/block` links to it)
    /// whose ext4 journal task reads `task`.
    fn sysfs(numbers: &str, device: &str, task: &str) -> tempfile::TempDir {
        let sys = tempfile::tempdir().unwrap();
        let block = sys.path().join("devices/virtual/block").join(device);
        std::fs::create_dir_all(&block).unwrap();
        std::fs::create_dir_all(sys.path().join("dev/block")).unwrap();
        std::os::unix::fs::symlink(&block, sys.path().join("dev/block").join(numbers)).unwrap();
        let ext4 = sys.path().join("fs/ext4").join(device);
        std::fs::create_dir_all(&ext4).unwrap();
        std::fs::write(ext4.join("journal_task"), task).unwrap();
        sys
    }

    #[test]
    fn the_journal_of_a_mapped_device_is_found_through_its_numbers() {
        let info = "30 1 253:2 / /srv rw,relatime - ext4 /dev/mapper/vg-srv rw\n";
        let srv = Path::new("/srv/data");
        let sys = sysfs("253:2", "dm-2", "jbd2/dm-2-8\n");
        assert_eq!(describe_with(info, sys.path(), srv), "ext4 with a journal");
        let sys = sysfs("253:2", "dm-2", "<none>\n");
        assert_eq!(
            describe_with(info, sys.path(), srv),
            "ext4 without a journal"
        );
        // Without the numbers' link, the source's own name is tried.
        let sys = sysfs("7:0", "vg-srv", "<none>\n");
        assert_eq!(
            describe_with(info, sys.path(), srv),
            "ext4 without a journal"
        );
        // Neither known: the type alone.
        let sys = sysfs("7:0", "loop9", "<none>\n");
        assert_eq!(describe_with(info, sys.path(), srv), "ext4");
        assert_eq!(
            describe_with(info, sys.path(), Path::new("/home")),
            "unknown"
        );
        assert_eq!(
            describe_with(INFO, sys.path(), Path::new("/dev/shm/x")),
            "tmpfs"
        );
    }

    #[test]
    fn text_that_is_not_mountinfo_finds_nothing() {
        assert_eq!(mount_of("garbage", Path::new("/tmp")), None);
        assert_eq!(mount_of("", Path::new("/tmp")), None);
    }

    #[test]
    fn this_machines_temporary_directory_is_described() {
        // Whatever it is, on Linux it is on some mount with a type.
        let fs = describe(&std::env::temp_dir());
        assert!(!fs.is_empty());
        if Path::new("/proc/self/mountinfo").exists() {
            assert_ne!(fs, "unknown");
        }
    }
}
