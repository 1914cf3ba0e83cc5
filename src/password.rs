//! Password hashing: argon2id with OWASP's parameters (m = 19 MiB, t = 2, p = 1), for members
//! (sign-up, password change) and auth (login) alike.
//!
//! - Always on a blocking thread, so a login never stalls the async runtime's workers.
//! - At most two hashes per core at once ([`PERMITS_PER_CORE`]): a burst of logins waits its
//!   turn instead of claiming 19 MiB and a thread each.
//! - Each running hash borrows its 19 MiB of argon2 memory from a pool and gives it back: in a
//!   burst the memory is allocated once per permit and reused through argon2's
//!   `hash_password_into_with_memory`, instead of 19 MiB being allocated and freed per hash on
//!   whichever blocking thread ran it (that fragmented the heap: 400 concurrent sign-ups left
//!   the process at 1.97 GB resident). When no hash is running or waiting, the pool is
//!   emptied, so an idle shop does not keep 19 MiB per permit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

/// Memory cost in KiB (19 MiB).
pub const MEMORY_KIB: u32 = 19 * 1024;
/// Iterations.
pub const ITERATIONS: u32 = 2;
/// Parallelism.
pub const PARALLELISM: u32 = 1;
/// Hashes running at once, per core.
pub const PERMITS_PER_CORE: usize = 2;
/// The largest memory cost a stored hash may ask for when verified (a hash made with other
/// parameters is still checked, within this).
const MAX_VERIFY_MEMORY_KIB: u32 = 256 * 1024;

fn params() -> anyhow::Result<Params> {
    Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))
}

/// The argon2 memory of the running hashes: at most one block set per permit exists, as at
/// most that many hashes run at once.
struct Arena {
    free: Mutex<Vec<Vec<Block>>>,
    /// Block sets allocated so far (for the tests).
    allocated: AtomicUsize,
    /// Hashes running or waiting for a permit.
    in_flight: AtomicUsize,
}

impl Arena {
    fn global() -> &'static Self {
        static ARENA: OnceLock<Arena> = OnceLock::new();
        ARENA.get_or_init(|| Self {
            free: Mutex::new(Vec::new()),
            allocated: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Frees the pooled memory.
    fn release(&self) {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Runs `work` with at least `blocks` blocks of argon2 memory, reusing a pooled set of the
    /// standard size when there is one.
    fn with_blocks<T>(&self, blocks: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
        let standard = MEMORY_KIB as usize;
        let pooled = (blocks <= standard)
            .then(|| self.free.lock().unwrap_or_else(|p| p.into_inner()).pop())
            .flatten();
        let mut memory = pooled.unwrap_or_else(|| {
            self.allocated.fetch_add(1, Ordering::Relaxed);
            vec![Block::default(); blocks.max(standard)]
        });
        let out = work(&mut memory);
        if memory.len() == standard {
            self.free
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(memory);
        }
        out
    }
}

fn hash_now(password: &SecretString) -> anyhow::Result<String> {
    let salt_bytes = crate::crypto::random_bytes(16);
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let params = params()?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        Arena::global()
            .with_blocks(params.block_count(), |memory| {
                argon2.hash_password_into_with_memory(
                    password.expose_secret().as_bytes(),
                    &salt_bytes,
                    out,
                    memory,
                )
            })
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| anyhow::anyhow!("params: {e}"))?,
        salt: Some(Salt::from(&salt)),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Whether `password` hashes to the stored PHC string `stored` (compared in constant time).
fn verify_now(password: &SecretString, stored: &str) -> anyhow::Result<bool> {
    let phc = PasswordHash::new(stored).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
    let algorithm =
        Algorithm::try_from(phc.algorithm).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
    let version = phc
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| anyhow::anyhow!("stored hash: {e}"))?
        .unwrap_or_default();
    let params = Params::try_from(&phc).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
    anyhow::ensure!(
        params.m_cost() <= MAX_VERIFY_MEMORY_KIB,
        "stored hash asks for {} KiB",
        params.m_cost()
    );
    let (Some(salt), Some(expected)) = (phc.salt, phc.hash) else {
        anyhow::bail!("stored hash has no salt or no output");
    };
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt
        .decode_b64(&mut salt_buf)
        .map_err(|e| anyhow::anyhow!("stored salt: {e}"))?;
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let computed = Output::init_with(expected.len(), |out| {
        Arena::global()
            .with_blocks(params.block_count(), |memory| {
                argon2.hash_password_into_with_memory(
                    password.expose_secret().as_bytes(),
                    salt_bytes,
                    out,
                    memory,
                )
            })
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .map_err(|e| anyhow::anyhow!("verifying a password: {e}"))?;
    // `Output`'s equality is constant-time.
    Ok(computed == expected)
}

/// One hash running or waiting; the last one to end empties the memory pool.
struct InFlight;

impl InFlight {
    fn new() -> Self {
        Arena::global().in_flight.fetch_add(1, Ordering::AcqRel);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let arena = Arena::global();
        if arena.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            arena.release();
        }
    }
}

/// Runs `work` on a blocking thread once one of the hashing permits is free.
async fn hashing<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let in_flight = InFlight::new();
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    let permits = PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Arc::new(Semaphore::new(PERMITS_PER_CORE * cores))
    });
    let permit = Arc::clone(permits)
        .acquire_owned()
        .await
        .context("the password hashing permits are closed")?;
    // The permit goes with the work: a caller that stops waiting (its client hung up) does
    // not free it while the hash is still running.
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _in_flight = in_flight;
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
        let ok = verify_now(&password, &hash)?;
        Ok(ok && known)
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

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

    /// The pooled-memory path agrees with the argon2 crate's own, both ways, and checks a
    /// hash made with other parameters.
    #[tokio::test]
    async fn hashes_agree_with_the_argon2_crate() {
        let ours = hash("correct horse battery".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse battery", &parsed)
                .is_ok()
        );
        let weaker = Params::new(8 * 1024, 1, 1, None).unwrap();
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, weaker)
            .hash_password(
                b"correct horse battery",
                &SaltString::encode_b64(&[7u8; 16]).unwrap(),
            )
            .unwrap()
            .to_string();
        assert!(
            verify("correct horse battery".into(), Some(theirs.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("wrong".into(), Some(theirs)).await.unwrap());
        assert!(
            verify("x".into(), Some("$argon2id$nonsense".into()))
                .await
                .is_err()
        );
    }

    /// A burst of 24 hashes allocates at most one memory set per permit, and once it is over
    /// the pool is empty.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_reuses_one_memory_set_per_permit_and_frees_them_after() {
        let arena = Arena::global();
        let before = arena.allocated.load(Ordering::Relaxed);
        let hashes: Vec<_> = (0..24)
            .map(|i| tokio::spawn(hash(format!("password number {i}").into())))
            .collect();
        for h in hashes {
            h.await.unwrap().unwrap();
        }
        let allocated = arena.allocated.load(Ordering::Relaxed) - before;
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        // Other tests of this binary may hash at the same time; each is one more hash at once.
        assert!(
            allocated <= PERMITS_PER_CORE * cores + 4,
            "{allocated} sets for 24 hashes"
        );
        assert!(
            allocated < 24,
            "memory was reused: {allocated} sets for 24 hashes"
        );
        // Once no hash runs or waits (other tests of this binary may still be hashing), the
        // pool is empty.
        let started = std::time::Instant::now();
        while !arena.free.lock().unwrap().is_empty() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "block sets are still kept after the burst"
            );
            tokio::task::yield_now().await;
        }
    }
}
