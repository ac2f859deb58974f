//! `Config::check_layout` on real directories. Every temporary directory here is on one
//! device, so the device checks always fire without `force_device`.

use std::fs;
use std::path::{Path, PathBuf};

use parity_core::config::{Config, ConfigError};

/// A temporary array: `d1`, `d2` (data), `par` (parity) and `state` directories.
struct Array {
    root: tempfile::TempDir,
}

impl Array {
    fn new() -> Array {
        let root = tempfile::tempdir().unwrap();
        for d in ["d1", "d2", "par", "state"] {
            fs::create_dir(root.path().join(d)).unwrap();
        }
        Array { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// Parses a config in which `@` stands for the array root.
    fn config(&self, text: &str) -> Config {
        let text = text.replace('@', self.root.path().to_str().unwrap());
        Config::parse(&text, Path::new("array.conf")).unwrap()
    }

    fn standard(&self, extra: &str) -> Config {
        self.config(&format!(
            "parity @/par/snapraid.parity\ncontent @/state/snapraid.content\n\
             content @/d1/snapraid.content\ndata d1 @/d1\ndata d2 @/d2/\n{extra}"
        ))
    }
}

fn layout_error(config: &Config, force_device: bool) -> String {
    match config.check_layout(force_device) {
        Err(e @ ConfigError::Layout { .. }) => e.to_string(),
        other => panic!("expected a layout error, got {other:?}"),
    }
}

#[test]
fn one_device_is_refused_then_allowed_by_force() {
    let array = Array::new();
    let config = array.standard("");
    let e = config.check_layout(false).unwrap_err();
    assert!(matches!(e, ConfigError::Device { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.starts_with("array.conf:5: data disk 'd1'"), "{msg}");
    assert!(msg.contains("and data disk 'd2'"), "{msg}");
    assert!(msg.ends_with("pass --force-device"), "{msg}");

    let warnings = config.check_layout(true).unwrap();
    let messages: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
    let has = |needle: &str| messages.iter().any(|m| m.contains(needle));
    assert!(
        has("data disk 'd1'") && has("and data disk 'd2'"),
        "{messages:#?}"
    );
    assert!(has("'parity' file"), "{messages:#?}");
    assert!(
        has("content files are on 1 distinct device(s); expected at least 2"),
        "{messages:#?}"
    );
    assert!(has("count as one copy"), "{messages:#?}");
    assert!(
        messages.iter().all(|m| m.starts_with("array.conf:")),
        "{messages:#?}"
    );
}

#[test]
fn a_single_disk_still_shares_the_parity_device() {
    let array = Array::new();
    let config = array.config("parity @/par/p\ncontent @/state/c\ncontent @/d1/c\ndata d1 @/d1\n");
    let msg = config.check_layout(false).unwrap_err().to_string();
    assert!(msg.starts_with("array.conf:1: 'parity' file"), "{msg}");
    assert!(msg.contains("same device as data disk 'd1'"), "{msg}");
}

#[test]
fn parity_levels_on_one_device_are_refused() {
    let array = Array::new();
    let config =
        array.config("parity @/par/p1\n2-parity @/par/p2\ncontent @/state/c\ndata d1 @/d1\n");
    let warnings = config.check_layout(true).unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.at.line == 2 && w.message.contains("lose two parity levels")),
        "{warnings:#?}"
    );
}

#[test]
fn missing_data_directory_names_the_disk() {
    let array = Array::new();
    let config = array.standard("data d3 @/d3\n");
    let msg = layout_error(&config, true);
    assert!(
        msg.starts_with("array.conf:6: data disk 'd3': directory '"),
        "{msg}"
    );
    assert!(msg.contains("is not accessible"), "{msg}");
    assert!(
        msg.ends_with("mount the disk there or fix the path"),
        "{msg}"
    );
    // The same error comes before any device check.
    assert_eq!(layout_error(&config, false), msg);
}

#[test]
fn data_path_that_is_a_file_is_refused() {
    let array = Array::new();
    fs::write(array.path("notadir"), b"x").unwrap();
    let config = array.standard("data d3 @/notadir\n");
    let msg = layout_error(&config, true);
    assert!(
        msg.contains("data disk 'd3'") && msg.contains("is not a directory"),
        "{msg}"
    );
}

#[test]
fn missing_parity_directory_is_refused() {
    let array = Array::new();
    let config = array.config("parity @/gone/p\ncontent @/state/c\ndata d1 @/d1\n");
    let msg = layout_error(&config, true);
    assert!(
        msg.starts_with("array.conf:1: the directory of 'parity' file"),
        "{msg}"
    );
    assert!(msg.contains("mount its disk or fix the path"), "{msg}");
}

#[test]
fn parity_inside_a_data_disk_is_refused_unless_excluded() {
    let array = Array::new();
    let config = array
        .config("parity @/d2/sub/snapraid.parity\ncontent @/state/c\ndata d1 @/d1\ndata d2 @/d2\n");
    fs::create_dir(array.path("d2/sub")).unwrap();
    let msg = layout_error(&config, true);
    assert!(msg.starts_with("array.conf:1: 'parity' file"), "{msg}");
    assert!(msg.contains("lies inside data disk 'd2'"), "{msg}");
    assert!(msg.contains("add 'exclude /sub/snapraid.parity'"), "{msg}");

    let config = array.config(
        "parity @/d2/sub/snapraid.parity\ncontent @/state/c\ndata d1 @/d1\ndata d2 @/d2\n\
         exclude /sub/\n",
    );
    assert!(config.check_layout(true).is_ok());
    let config = array.config(
        "parity @/d2/sub/snapraid.parity\ncontent @/state/c\ndata d1 @/d1\ndata d2 @/d2\n\
         exclude *.parity\n",
    );
    assert!(config.check_layout(true).is_ok());
}

#[test]
fn parity_reached_through_a_symlink_is_still_inside() {
    let array = Array::new();
    std::os::unix::fs::symlink(array.path("d1"), array.path("par/link")).unwrap();
    let config = array.config("parity @/par/link/p\ncontent @/state/c\ndata d1 @/d1\n");
    let msg = layout_error(&config, true);
    assert!(
        msg.contains("lies inside data disk 'd1'") && msg.contains("'/p'"),
        "{msg}"
    );
}

#[test]
fn content_inside_a_data_disk_is_allowed_where_configured() {
    let array = Array::new();
    // The standard layout keeps a content copy on d1; it is skipped by the scan.
    assert!(array.standard("").check_layout(true).is_ok());
    // Written through a symlink, the scan would not recognise it, so it is refused.
    std::os::unix::fs::symlink(array.path("d1"), array.path("state/link")).unwrap();
    let config = array.config("parity @/par/p\ncontent @/state/link/c\ndata d1 @/d1\n");
    let msg = layout_error(&config, true);
    assert!(msg.starts_with("array.conf:2: content file"), "{msg}");
    assert!(msg.contains("lies inside data disk 'd1'"), "{msg}");
}

#[test]
fn metrics_file_inside_a_data_disk_is_a_warning() {
    let array = Array::new();
    let config = array.standard("metrics-file @/d2/lhparity.prom\n");
    let warnings = config.check_layout(true).unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.at.line == 6 && w.message.contains("metrics file")),
        "{warnings:#?}"
    );
    let config = array.standard("metrics-file @/state/lhparity.prom\n");
    let warnings = config.check_layout(true).unwrap();
    assert!(
        !warnings.iter().any(|w| w.message.contains("metrics file")),
        "{warnings:#?}"
    );
}
