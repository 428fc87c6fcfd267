//! `cargo xtask fresh-deps`: the client crates as a new user's project gets them. A throwaway
//! project depends on `uploads-hyper` and `uploads-ureq` by path and has no lockfile, so cargo
//! resolves every dependency afresh to the newest version our requirements allow (ours is
//! older: a dependency's new release may deprecate what we call, as rustls 0.23.48 did). It is
//! checked with warnings denied; cargo caps the lints of registry crates, so only a warning in
//! our own crates fails it.
//!
//! The project lives in `<target>/fresh-deps/`, with its own target folder there (its
//! versions and flags differ from the workspace's, which must not be rebuilt for it). It
//! needs the network, for the registry's index.

use std::fmt::Write;
use std::fs;
use std::path::Path;

use crate::{cargo, run_command, target_dir, workspace_root};

/// The client crates a user depends on, by their folder under the workspace root.
const CLIENTS: [(&str, &str); 2] = [
    ("uploads-hyper", "crates/uploads-hyper"),
    ("uploads-ureq", "crates/uploads-ureq"),
];

/// Writes the throwaway project (no lockfile) and checks it with warnings denied.
pub fn run() -> Result<(), String> {
    let root = workspace_root();
    let project = target_dir()?.join("fresh-deps");
    write_project(&root, &project)?;
    run_command(
        cargo()
            .current_dir(&project)
            .args(["check", "--quiet", "--manifest-path", "Cargo.toml"])
            .env("CARGO_TARGET_DIR", project.join("target"))
            .env("RUSTFLAGS", "-D warnings"),
    )
    .map_err(|failure| {
        format!("{failure}: our crates warn when built with freshly resolved dependencies")
    })
}

/// The project: a manifest naming the clients by path, an empty library, and no lockfile.
fn write_project(root: &Path, project: &Path) -> Result<(), String> {
    let src = project.join("src");
    fs::create_dir_all(&src)
        .map_err(|error| format!("cannot create {}: {error}", src.display()))?;
    let mut manifest = String::from(
        "# Written by `cargo xtask fresh-deps`; resolved afresh on every run.\n\
         [package]\nname = \"fresh-deps\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
         [dependencies]\n",
    );
    for (name, folder) in CLIENTS {
        let path = root.join(folder);
        let path = path
            .to_str()
            .ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
        let _ = writeln!(manifest, "{name} = {{ path = {} }}", toml_string(path));
    }
    // Its own workspace, even when the target folder is inside ours.
    manifest.push_str("\n[workspace]\n");
    write(&project.join("Cargo.toml"), &manifest)?;
    write(&src.join("lib.rs"), "")?;
    let lockfile = project.join("Cargo.lock");
    match fs::remove_file(&lockfile) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(format!("cannot remove {}: {error}", lockfile.display())),
    }
}

/// Writes `text` to `path`.
fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|error| format!("cannot write {}: {error}", path.display()))
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut quoted = String::from("\"");
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_for_toml() {
        assert_eq!(toml_string("/work/uploads"), "\"/work/uploads\"");
        assert_eq!(toml_string(r#"C:\a "b""#), r#""C:\\a \"b\"""#);
    }
}
