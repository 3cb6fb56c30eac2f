//! Admin bearer tokens: loading one from a file and checking a request's
//! `authorization` value against it in constant time. The gRPC admin API
//! (`--grpc-admin-token-file`, reads optionally open with
//! `--grpc-admin-open-reads`) and the HTTP API's admin writes
//! (`--http-admin-token-file`) each have their own [`Policy`].

use std::path::Path;

use anyhow::{bail, Context};
use subtle::ConstantTimeEq;
use tonic::Status;

/// Whether an RPC only reads (list, get, stats, cluster status, health) or
/// changes something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Who may call the admin API.
#[derive(Clone, Default)]
pub struct Policy {
    /// `None`: anyone.
    token: Option<Vec<u8>>,
    open_reads: bool,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("open_reads", &self.open_reads)
            .finish()
    }
}

impl Policy {
    /// Anyone may call everything.
    pub fn open() -> Policy {
        Policy::default()
    }

    /// Every call needs `token` (reads too unless `open_reads`).
    pub fn with_token(token: &[u8], open_reads: bool) -> anyhow::Result<Policy> {
        if token.is_empty() {
            bail!("the admin token is empty");
        }
        Ok(Policy {
            token: Some(token.to_vec()),
            open_reads,
        })
    }

    /// The policy the flags ask for: the token is the file's contents
    /// without surrounding whitespace.
    pub fn from_flags(token_file: Option<&Path>, open_reads: bool) -> anyhow::Result<Policy> {
        let Some(path) = token_file else {
            return Ok(Policy::open());
        };
        let raw = std::fs::read(path)
            .with_context(|| format!("reading the admin token file {}", path.display()))?;
        let token = raw.trim_ascii();
        Policy::with_token(token, open_reads)
            .with_context(|| format!("admin token file {}", path.display()))
    }

    /// Whether a request with this `authorization` value may do `access`.
    pub fn admits(&self, authorization: Option<&[u8]>, access: Access) -> Result<(), Denied> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        if access == Access::Read && self.open_reads {
            return Ok(());
        }
        let presented = authorization
            .and_then(|value| value.strip_prefix(b"Bearer "))
            .map(<[u8]>::trim_ascii);
        match presented {
            Some(presented) if bool::from(presented.ct_eq(token.as_slice())) => Ok(()),
            Some(_) => Err(Denied::WrongToken),
            None => Err(Denied::NoToken),
        }
    }

    /// [`Policy::admits`] as a gRPC status.
    pub fn check(&self, authorization: Option<&[u8]>, access: Access) -> Result<(), Status> {
        self.admits(authorization, access)
            .map_err(|denied| match denied {
                Denied::WrongToken => Status::unauthenticated("UNAUTHENTICATED: wrong admin token"),
                Denied::NoToken => Status::unauthenticated(
                    "UNAUTHENTICATED: this call needs `authorization: Bearer <token>` metadata",
                ),
            })
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `Bearer` token was presented.
    NoToken,
    /// The token presented is not the configured one.
    WrongToken,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn an_open_policy_lets_everything_through() {
        let policy = Policy::open();
        assert!(policy.check(None, Access::Write).is_ok());
        assert!(policy.check(Some(b"Bearer x"), Access::Read).is_ok());
    }

    #[test]
    fn a_token_is_required_and_compared_exactly() {
        let policy = Policy::with_token(b"s3cret", false).unwrap();
        assert!(policy.check(Some(b"Bearer s3cret"), Access::Write).is_ok());
        for wrong in [
            None,
            Some(&b"Bearer s3cre"[..]),
            Some(b"Bearer s3cret2"),
            Some(b"s3cret"),
            Some(b"Basic s3cret"),
            Some(b"Bearer "),
        ] {
            let error = policy.check(wrong, Access::Write).unwrap_err();
            assert_eq!(error.code(), Code::Unauthenticated, "{wrong:?}");
            assert!(policy.check(wrong, Access::Read).is_err());
        }
    }

    #[test]
    fn open_reads_let_reads_through_but_not_writes() {
        let policy = Policy::with_token(b"t", true).unwrap();
        assert!(policy.check(None, Access::Read).is_ok());
        assert!(policy.check(None, Access::Write).is_err());
    }

    #[test]
    fn the_token_file_is_trimmed_and_an_empty_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").unwrap();
        let policy = Policy::from_flags(Some(&path), false).unwrap();
        assert!(policy.check(Some(b"Bearer abc"), Access::Write).is_ok());
        assert!(!format!("{policy:?}").contains("abc"));
        std::fs::write(&path, " \n").unwrap();
        assert!(Policy::from_flags(Some(&path), false).is_err());
        assert!(Policy::from_flags(Some(&dir.path().join("missing")), false).is_err());
    }
}
