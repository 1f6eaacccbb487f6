//! The job's shared secret and the challenge-response that proves it.
//!
//! Every process of a job holds the same [`Token`] (the operator mounts one Secret per job;
//! `pretrain launch` generates one for a single node and takes a file or variable for several).
//! A connection to the store or between two ranks starts with both sides sending a fresh random
//! [`Nonce`]; each then proves it knows the token with an HMAC-SHA256 over a role label, the
//! protocol version, the job id and both nonces ([`proof`]). The token itself never crosses the
//! wire, a proof is useless for any other connection (fresh nonces) or role (the label), proofs
//! are compared in constant time ([`verify`]), and a peer that cannot prove the token learns
//! nothing about the job (not even its id, which is only mixed into the proofs).

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a nonce and of a proof.
pub const PROOF_BYTES: usize = 32;

/// A fresh random challenge.
pub type Nonce = [u8; PROOF_BYTES];

/// Shortest token accepted, in bytes (a generated one has 64 hex digits).
pub const MIN_TOKEN_BYTES: usize = 16;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Why a token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token text is too short, too long or empty.
    #[error("{origin}: {why}")]
    Invalid {
        /// Where the token came from (a file, a variable).
        origin: String,
        /// What is wrong with it.
        why: String,
    },
    /// The token file could not be read.
    #[error("cannot read the store token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The system's random source failed.
    #[error("cannot generate a store token: {0}")]
    Random(String),
}

/// The job's shared secret: the bytes of its text form, surrounding whitespace removed.
/// `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} bytes, redacted>)", self.0.len())
    }
}

impl Token {
    /// A token from its text (`origin` names where it came from, for the error): at least
    /// [`MIN_TOKEN_BYTES`] bytes once trimmed.
    pub fn new(text: &str, origin: &str) -> Result<Token, TokenError> {
        let t = text.trim();
        let invalid = |why: String| TokenError::Invalid {
            origin: origin.to_string(),
            why,
        };
        if t.len() < MIN_TOKEN_BYTES {
            return Err(invalid(format!(
                "the store token has {} bytes, fewer than {MIN_TOKEN_BYTES}; use a random one, \
                 e.g. `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'`",
                t.len()
            )));
        }
        if t.len() > MAX_TOKEN_BYTES {
            return Err(invalid(format!(
                "the store token has {} bytes, more than {MAX_TOKEN_BYTES}",
                t.len()
            )));
        }
        Ok(Token(t.to_string()))
    }

    /// The token in the file at `path`.
    pub fn from_file(path: &Path) -> Result<Token, TokenError> {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| TokenError::Read {
            path: shown.clone(),
            source,
        })?;
        if meta.len() > MAX_TOKEN_BYTES as u64 * 2 {
            return Err(TokenError::Invalid {
                origin: shown,
                why: format!("{} bytes is too large for a store token", meta.len()),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: shown.clone(),
            source,
        })?;
        Token::new(&text, &shown)
    }

    /// A new random token: 32 bytes from the system's random source, as 64 hex digits.
    pub fn generate() -> Result<Token, TokenError> {
        let bytes = nonce().map_err(TokenError::Random)?;
        Ok(Token(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// The text form, to hand the token to a child process.
    pub fn as_text(&self) -> &str {
        &self.0
    }
}

/// A fresh random nonce from the system's random source.
pub fn nonce() -> Result<Nonce, String> {
    let mut n = [0u8; PROOF_BYTES];
    getrandom::fill(&mut n).map_err(|e| e.to_string())?;
    Ok(n)
}

fn mac(token: &Token, role: &str, version: u32, job: &str, parts: &[&[u8]]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(token.0.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    for field in [role.as_bytes(), &version.to_le_bytes(), job.as_bytes()]
        .into_iter()
        .chain(parts.iter().copied())
    {
        m.update(&(field.len() as u64).to_le_bytes());
        m.update(field);
    }
    m
}

/// The proof that the side playing `role` knows `token`: HMAC-SHA256 over the role, protocol
/// version, job id and `parts` (the nonces of both sides and whatever else both sides saw),
/// each length-prefixed.
pub fn proof(token: &Token, role: &str, version: u32, job: &str, parts: &[&[u8]]) -> Nonce {
    mac(token, role, version, job, parts)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `got` is the proof of `role` (constant-time comparison).
pub fn verify(
    token: &Token,
    role: &str,
    version: u32,
    job: &str,
    parts: &[&[u8]],
    got: &[u8],
) -> bool {
    mac(token, role, version, job, parts)
        .verify_slice(got)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(t: &str) -> Token {
        Token::new(t, "test").expect("valid token")
    }

    #[test]
    fn a_proof_holds_only_for_its_token_role_job_and_nonces() {
        let t = token("0123456789abcdef0123");
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let p = proof(&t, "client", 2, "job", &[&a, &b]);
        assert!(verify(&t, "client", 2, "job", &[&a, &b], &p));
        assert!(!verify(
            &token("0123456789abcdef0124"),
            "client",
            2,
            "job",
            &[&a, &b],
            &p
        ));
        assert!(!verify(&t, "server", 2, "job", &[&a, &b], &p));
        assert!(!verify(&t, "client", 3, "job", &[&a, &b], &p));
        assert!(!verify(&t, "client", 2, "jo", &[&a, &b], &p));
        assert!(!verify(&t, "client", 2, "job", &[&b, &a], &p));
        assert!(!verify(&t, "client", 2, "job", &[&a, &b], &p[..31]));
        // Length prefixes: moving a byte between fields changes the proof.
        assert_ne!(
            proof(&t, "client", 2, "jobx", &[b"y"]),
            proof(&t, "client", 2, "job", &[b"xy"])
        );
    }

    #[test]
    fn tokens_are_trimmed_bounded_and_never_printed() {
        assert_eq!(token("  0123456789abcdef\n").as_text(), "0123456789abcdef");
        let e = Token::new("short", "PRETRAIN_STORE_TOKEN").expect_err("too short");
        assert!(e.to_string().starts_with("PRETRAIN_STORE_TOKEN: "), "{e}");
        let g = Token::generate().expect("random");
        assert_eq!(g.as_text().len(), 64);
        assert_ne!(g, Token::generate().expect("random"));
        assert!(!format!("{g:?}").contains(g.as_text()));
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("token");
        std::fs::write(&f, format!("{}\n", g.as_text())).expect("write");
        assert_eq!(Token::from_file(&f).expect("reads"), g);
        let e = Token::from_file(&dir.path().join("none")).expect_err("missing");
        assert!(e.to_string().contains("none"), "{e}");
    }
}
