//! Password hashing and checking with argon2id (PHC strings), on dedicated low-priority
//! threads.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Longest password accepted, in bytes; bounds the hashing work a client can ask for.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Empty or too long.
    #[error("password must be 1 to {MAX_PASSWORD_BYTES} bytes")]
    BadLength,
    /// The hasher failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The hashing thread failed.
    #[error("password task failed: {0}")]
    Task(String),
}

/// Nice value of the hashing threads: under load the scheduler gives chat's threads about
/// nine times their share, so a login storm slows logins before it slows messages.
pub const HASH_NICE: i32 = 10;

/// A hash to compute on a hashing thread, with that thread's argon2 memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Which queue a hash waits in when every hashing thread is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Logins proven by a registered device key, and the administrator's own hashes: taken
    /// first, so a flood of guesses cannot hold up the real user's login.
    First,
    /// Every other login.
    Rest,
}

/// After this many `First` jobs in a row while `Rest` jobs wait, one `Rest` job runs: a
/// stream of proven logins slows the others without stopping them.
const FIRST_RUN: u32 = 8;

/// The two queues the hashing threads take from.
#[derive(Default)]
struct Queues {
    first: VecDeque<Job>,
    rest: VecDeque<Job>,
    /// `First` jobs taken in a row while `rest` was not empty.
    run: u32,
}

impl Queues {
    /// Publishes the queues' depths (`chatd_password_hash_queue`), under their lock so the
    /// last figure set is the current one.
    fn report(&self) {
        crate::metrics::get().hash_queue(self.first.len(), self.rest.len());
    }

    fn push(&mut self, lane: Lane, job: Job) {
        match lane {
            Lane::First => self.first.push_back(job),
            Lane::Rest => self.rest.push_back(job),
        }
    }

    fn pop(&mut self) -> Option<Job> {
        if self.rest.is_empty() || self.run < FIRST_RUN {
            if let Some(job) = self.first.pop_front() {
                self.run = if self.rest.is_empty() {
                    0
                } else {
                    self.run + 1
                };
                return Some(job);
            }
        }
        self.run = 0;
        self.rest.pop_front().or_else(|| self.first.pop_front())
    }
}

/// The queues and the condition variable the idle hashing threads wait on.
#[derive(Default)]
struct Hashers {
    queues: Mutex<Queues>,
    ready: Condvar,
}

impl Hashers {
    fn queues(&self) -> MutexGuard<'_, Queues> {
        // Each update is one push or pop: a poisoned lock still holds valid queues.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn submit(&self, lane: Lane, job: Job) {
        let mut queues = self.queues();
        queues.push(lane, job);
        queues.report();
        drop(queues);
        self.ready.notify_one();
    }

    fn take(&self) -> Job {
        let mut queues = self.queues();
        loop {
            if let Some(job) = queues.pop() {
                queues.report();
                return job;
            }
            queues = self
                .ready
                .wait(queues)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Dedicated hashing threads, one per core, each with its own argon2 working memory.
///
/// argon2 needs 19 MiB per hash. Allocating it per call let glibc's allocator keep
/// ~15 MiB per login or `user add` (measured: 8 MiB -> 630 MiB RSS after 40 hashes),
/// which a stream of wrong passwords could grow without bound. Each thread reuses its
/// buffer, so the memory is fixed (threads x 19 MiB), and the threads cap how many hashes
/// run at once; the rest wait in two queues ([`Lane`]). The threads run at [`HASH_NICE`],
/// which the blocking pool cannot (a thread may lower its own priority but never raise it
/// back).
static HASHERS: LazyLock<Option<Arc<Hashers>>> = LazyLock::new(|| {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hashers = Arc::new(Hashers::default());
    let mut started = 0;
    for i in 0..threads {
        let hashers = Arc::clone(&hashers);
        let spawned = std::thread::Builder::new()
            .name(format!("argon2-{i}"))
            .spawn(move || hashing_thread(&hashers));
        match spawned {
            Ok(_) => started += 1,
            Err(e) => tracing::error!(error = %e, "cannot start a password hashing thread"),
        }
    }
    (started > 0).then_some(hashers)
});

fn hashing_thread(hashers: &Hashers) {
    // On Linux the nice value is per thread, and no pid means the calling thread.
    if let Err(e) = rustix::process::setpriority_process(None, HASH_NICE) {
        tracing::warn!(error = %e, "cannot lower the priority of a hashing thread");
    }
    let mut memory = Vec::new();
    loop {
        let job = hashers.take();
        // A panicking hash fails that one call (its reply is dropped), not the thread.
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut memory))).is_err() {
            memory = Vec::new();
        }
    }
}

/// Runs `f` on a hashing thread with its argon2 buffer of at least `blocks` blocks.
async fn with_memory<T: Send + 'static>(
    lane: Lane,
    blocks: usize,
    f: impl FnOnce(&mut [Block]) -> T + Send + 'static,
) -> Result<T, PasswordError> {
    let Some(hashers) = HASHERS.as_ref() else {
        return Err(PasswordError::Task(
            "no password hashing thread could start".into(),
        ));
    };
    let (done, result) = tokio::sync::oneshot::channel();
    hashers.submit(lane, job(blocks, f, done));
    result
        .await
        .map_err(|_| PasswordError::Task("the hashing thread failed".into()))
}

/// The [`Job`] that runs `f` and sends its result to `done`.
fn job<T: Send + 'static>(
    blocks: usize,
    f: impl FnOnce(&mut [Block]) -> T + Send + 'static,
    done: tokio::sync::oneshot::Sender<T>,
) -> Job {
    Box::new(move |buf: &mut Vec<Block>| {
        // The caller went away while this waited in the queue (its login timed out, the
        // server is stopping): skip the work nobody will read.
        if done.is_closed() {
            return;
        }
        if buf.len() < blocks {
            buf.resize(blocks, Block::default());
        }
        let _ = done.send(f(&mut buf[..blocks]));
    })
}

/// Hashes `password` with argon2id and a random salt (default parameters: 19 MiB, t=2, p=1).
pub async fn hash(password: String) -> Result<String, PasswordError> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::BadLength);
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let params = Params::default();
    let blocks = params.block_count();
    with_memory(Lane::First, blocks, move |mem| {
        let hash_err = |e: &dyn std::fmt::Display| PasswordError::Hash(e.to_string());
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        argon
            .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, mem)
            .map_err(|e| hash_err(&e))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(|e| hash_err(&e))?,
            salt: Some(Salt::new(&salt).map_err(|e| hash_err(&e))?),
            hash: Some(Output::new(&out).map_err(|e| hash_err(&e))?),
        };
        Ok(phc.to_string())
    })
    .await?
}

/// A valid PHC string whose check always fails; verified against for unknown users so
/// that "no such user" takes as long as "wrong password".
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$9sTbSlTio3Biev89thdrlKKiCaYsjjYVJxGAL3swxpQ";

/// True if `password` matches `phc`. Any malformed hash counts as a mismatch.
pub async fn verify(password: String, phc: String) -> bool {
    verify_in(Lane::Rest, password, phc).await
}

/// [`verify`], waiting in `lane` when every hashing thread is busy.
pub async fn verify_in(lane: Lane, password: String, phc: String) -> bool {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(&phc) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let blocks = params.block_count();
    with_memory(lane, blocks, move |mem| {
        let argon = Argon2::new(algorithm, version, params);
        let mut out = vec![0u8; expected.len()];
        argon
            .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, mem)
            .is_ok()
            // Output's == is constant-time.
            && Output::new(&out).is_ok_and(|o| o == expected)
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn hash_then_verify() {
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse".into(), h.clone()).await);
        assert!(!verify("wrong".into(), h).await);
        assert!(!verify("x".into(), DUMMY_HASH.into()).await);
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(hash(String::new()).await.is_err());
        assert!(hash("a".repeat(MAX_PASSWORD_BYTES + 1)).await.is_err());
        assert!(hash("a".repeat(MAX_PASSWORD_BYTES)).await.is_ok());
    }

    #[tokio::test]
    async fn pooled_hashing_matches_the_stock_argon2_api() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        // Ours -> stock verifier.
        let ours = hash("pool me".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"pool me", &parsed)
                .is_ok()
        );
        // Stock hasher (other parameters too) -> ours.
        let params = Params::new(8 * 1024, 3, 1, None).unwrap();
        let stock = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"from elsewhere")
            .unwrap()
            .to_string();
        assert!(verify("from elsewhere".into(), stock.clone()).await);
        assert!(!verify("from elsewhere!".into(), stock).await);
        // Malformed or truncated hashes never match.
        assert!(!verify("x".into(), "$argon2id$v=19$m=19456".into()).await);
        assert!(!verify("x".into(), "not a hash".into()).await);
    }

    #[tokio::test]
    async fn hashes_run_on_niced_threads_and_in_parallel() {
        let hashes: Vec<_> = (0..4)
            .map(|i| tokio::spawn(hash(format!("pw{i}"))))
            .collect();
        for h in hashes {
            assert!(h.await.unwrap().unwrap().starts_with("$argon2id$"));
        }
        let nice = with_memory(Lane::Rest, 1, |_| {
            rustix::process::getpriority_process(None)
        })
        .await
        .unwrap()
        .unwrap();
        // HASH_NICE, or more when the test itself already ran at a lower priority.
        assert!(nice >= HASH_NICE, "hashing thread at nice {nice}");
    }

    #[test]
    fn a_hash_whose_caller_left_is_skipped() {
        let ran = Arc::new(AtomicBool::new(false));
        let (done, result) = tokio::sync::oneshot::channel::<()>();
        drop(result);
        let flag = Arc::clone(&ran);
        let mut memory = Vec::new();
        job(1, move |_| flag.store(true, Ordering::SeqCst), done)(&mut memory);
        assert!(!ran.load(Ordering::SeqCst), "the abandoned hash ran");
        assert!(memory.is_empty(), "no argon2 memory for it either");

        let (done, mut result) = tokio::sync::oneshot::channel();
        job(4, |mem| mem.len(), done)(&mut memory);
        assert_eq!(result.try_recv(), Ok(4));
    }

    #[test]
    fn proven_logins_go_first_and_the_rest_still_move() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut queues = Queues::default();
        let tagged = |tag: &'static str| -> Job {
            let order = Arc::clone(&order);
            Box::new(move |_| order.lock().unwrap().push(tag))
        };
        for _ in 0..3 {
            queues.push(Lane::Rest, tagged("rest"));
        }
        for _ in 0..(FIRST_RUN + 2) {
            queues.push(Lane::First, tagged("first"));
        }
        let mut memory = Vec::new();
        while let Some(job) = queues.pop() {
            job(&mut memory);
        }
        let order = order.lock().unwrap().clone();
        let first_run = FIRST_RUN as usize;
        // Queued after three guesses, the proven logins still run first ...
        assert!(
            order[..first_run].iter().all(|t| *t == "first"),
            "{order:?}"
        );
        // ... but a steady stream of them lets a guess through now and then.
        assert_eq!(order[first_run], "rest", "{order:?}");
        assert_eq!(order.len(), first_run + 2 + 3);
    }
}
