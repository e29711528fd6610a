//! Where the service key comes from: Supabase Vault, else the file `dex_collector.service_key_file`
//! names. Never a setting: any role reads a setting in `pg_db_role_setting`, and in every session
//! that has not loaded this library as a placeholder; the server logs a setting's new value on
//! reload. PostgreSQL's own secrets take a file for the same reason (`ssl_key_file`).
//!
//! The file is read at the start of every run, so a rotated key needs no reload, and it must be
//! private as `ssl_key_file` must: a regular file, owned by the server's user with no access for
//! group or others, or owned by root with at most read access for its group (how Docker and
//! Kubernetes secrets are mounted for a group).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

use crate::pg;

/// The most a key file may hold: a key is a header value, not a document.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Why the key file cannot be used. None of the variants holds any of the file's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    #[error("it does not exist")]
    Missing,
    #[error("it cannot be read: {reason}")]
    Unreadable { reason: String },
    #[error("it is not a regular file")]
    NotARegularFile,
    #[error(
        "it is owned by user id {uid}; it must be owned by the database server's user or by root"
    )]
    WrongOwner { uid: u32 },
    #[error("its mode is {mode:04o}: {}", if *owned_by_root {
        "others may access it, or its group may do more than read (use chmod 0640 or less)"
    } else {
        "group or others may access it (use chmod 0600)"
    })]
    TooOpen { mode: u32, owned_by_root: bool },
    #[error("it holds {bytes} bytes; a key file holds only the key")]
    TooLarge { bytes: u64 },
    #[error("it is empty")]
    Empty,
    #[error("the key in it must be printable ASCII without spaces or control characters")]
    NotAHeaderValue,
}

/// Reads the key from the file at `path`, checked as described above, without its one trailing
/// line end.
pub fn read_key_file(path: &str) -> Result<String, KeyFileError> {
    let file = File::open(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => KeyFileError::Missing,
        _ => KeyFileError::Unreadable {
            reason: error.to_string(),
        },
    })?;
    let metadata = file.metadata().map_err(|error| KeyFileError::Unreadable {
        reason: error.to_string(),
    })?;
    check_metadata(
        metadata.is_file(),
        metadata.uid(),
        metadata.mode(),
        metadata.len(),
        pg::effective_uid(),
    )?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| KeyFileError::Unreadable {
            reason: error.to_string(),
        })?;
    key_from_contents(&bytes)
}

/// The checks on what `stat` says, apart so that they can be tested for every owner and mode.
fn check_metadata(
    is_file: bool,
    owner: u32,
    mode: u32,
    len: u64,
    server_uid: u32,
) -> Result<(), KeyFileError> {
    if !is_file {
        return Err(KeyFileError::NotARegularFile);
    }
    let permissions = mode & 0o7777;
    let owned_by_root = owner == 0 && server_uid != 0;
    let forbidden = if owner == server_uid {
        0o077
    } else if owner == 0 {
        0o037
    } else {
        return Err(KeyFileError::WrongOwner { uid: owner });
    };
    if permissions & forbidden != 0 {
        return Err(KeyFileError::TooOpen {
            mode: permissions,
            owned_by_root,
        });
    }
    if len > MAX_KEY_FILE_BYTES {
        return Err(KeyFileError::TooLarge { bytes: len });
    }
    Ok(())
}

fn key_from_contents(bytes: &[u8]) -> Result<String, KeyFileError> {
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(KeyFileError::TooLarge {
            bytes: bytes.len() as u64,
        });
    }
    let key = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(bytes);
    if key.is_empty() {
        return Err(KeyFileError::Empty);
    }
    if !is_valid_header_value(key) {
        return Err(KeyFileError::NotAHeaderValue);
    }
    Ok(key.iter().map(|&b| char::from(b)).collect())
}

/// A key goes into an HTTP header: visible ASCII only, so it can never split or corrupt a request.
pub fn is_valid_header_value(value: &[u8]) -> bool {
    !value.is_empty() && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: u32 = 105;

    #[test]
    fn a_private_file_of_the_server_user_or_a_group_readable_one_of_root_is_accepted() {
        assert_eq!(check_metadata(true, SERVER, 0o100600, 20, SERVER), Ok(()));
        assert_eq!(check_metadata(true, SERVER, 0o100400, 20, SERVER), Ok(()));
        assert_eq!(check_metadata(true, 0, 0o100640, 20, SERVER), Ok(()));
        assert_eq!(check_metadata(true, 0, 0o100440, 20, SERVER), Ok(()));
    }

    #[test]
    fn files_others_may_read_are_refused() {
        assert_eq!(
            check_metadata(true, SERVER, 0o100644, 20, SERVER),
            Err(KeyFileError::TooOpen {
                mode: 0o644,
                owned_by_root: false
            })
        );
        assert!(check_metadata(true, SERVER, 0o100640, 20, SERVER).is_err());
        assert!(check_metadata(true, 0, 0o100644, 20, SERVER).is_err());
        assert!(check_metadata(true, 0, 0o100660, 20, SERVER).is_err());
        assert_eq!(
            check_metadata(true, 1000, 0o100600, 20, SERVER),
            Err(KeyFileError::WrongOwner { uid: 1000 })
        );
        assert_eq!(
            check_metadata(false, SERVER, 0o040700, 20, SERVER),
            Err(KeyFileError::NotARegularFile)
        );
        assert_eq!(
            check_metadata(true, SERVER, 0o100600, 5000, SERVER),
            Err(KeyFileError::TooLarge { bytes: 5000 })
        );
    }

    #[test]
    fn one_trailing_line_end_is_trimmed_and_nothing_else() {
        assert_eq!(key_from_contents(b"sk-live-1\n"), Ok("sk-live-1".into()));
        assert_eq!(key_from_contents(b"sk-live-1\r\n"), Ok("sk-live-1".into()));
        assert_eq!(key_from_contents(b"sk-live-1"), Ok("sk-live-1".into()));
        assert_eq!(key_from_contents(b"\n"), Err(KeyFileError::Empty));
        assert_eq!(key_from_contents(b""), Err(KeyFileError::Empty));
        assert_eq!(
            key_from_contents(b"sk-live-1\n\n"),
            Err(KeyFileError::NotAHeaderValue)
        );
        assert_eq!(
            key_from_contents(b"two words\n"),
            Err(KeyFileError::NotAHeaderValue)
        );
    }

    #[test]
    fn no_reason_repeats_the_content() {
        let reasons = [
            KeyFileError::Empty,
            KeyFileError::NotAHeaderValue,
            KeyFileError::TooLarge { bytes: 9 },
        ];
        for reason in reasons {
            assert!(!reason.to_string().contains("sk-live"));
        }
    }
}
