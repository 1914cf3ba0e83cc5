//! Password hashing: argon2id with OWASP's parameters (m = 19 MiB, t = 2, p = 1), always on a
//! blocking thread so a login never stalls the async runtime's workers, and at most two per
//! core at once: a burst of logins waits its turn instead of claiming 19 MiB and a thread
//! each.

use std::sync::{Arc, OnceLock};

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

/// Memory cost in KiB (19 MiB).
pub const MEMORY_KIB: u32 = 19 * 1024;
/// Iterations.
pub const ITERATIONS: u32 = 2;
/// Parallelism.
pub const PARALLELISM: u32 = 1;

fn argon2() -> anyhow::Result<Argon2<'static>> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_now(password: &SecretString) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(&crate::crypto::random_bytes(16))
        .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(argon2()?
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?
        .to_string())
}

/// Runs `work` on a blocking thread once one of the hashing permits is free.
async fn hashing<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    let permits = PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Arc::new(Semaphore::new(2 * cores))
    });
    let permit = Arc::clone(permits)
        .acquire_owned()
        .await
        .context("the password hashing permits are closed")?;
    // The permit goes with the work: a caller that stops waiting (its client hung up) does
    // not free it while the hash is still running.
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .context("the password hashing thread failed")?
}

/// The PHC string of a new argon2id hash of `password`.
pub async fn hash(password: SecretString) -> anyhow::Result<String> {
    hashing(move || hash_now(&password)).await
}

/// Whether `password` matches `hash`. With `None` (no such account) a fixed hash is checked
/// instead, so that an unknown login id takes as long as a wrong password.
pub async fn verify(password: SecretString, hash: Option<String>) -> anyhow::Result<bool> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    hashing(move || {
        let known = hash.is_some();
        let hash = match hash {
            Some(h) => h,
            None => match DUMMY.get() {
                Some(h) => h.clone(),
                None => DUMMY
                    .get_or_init(|| hash_now(&"not a password".into()).unwrap_or_default())
                    .clone(),
            },
        };
        let parsed = PasswordHash::new(&hash).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
        let ok = argon2()?
            .verify_password(password.expose_secret().as_bytes(), &parsed)
            .is_ok();
        Ok(ok && known)
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn argon2id_with_owasp_parameters() {
        let h = hash("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(
            verify("correct horse battery".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("wrong horse battery".into(), Some(h)).await.unwrap());
        assert!(!verify("not a password".into(), None).await.unwrap());
    }
}
