//! Executors and cores: the only code that knows glommio and tokio executors.
//!
//! Owns core placement (which core runs fetch, shard and io roles, validated against the cores
//! this process may run on), thread spawning and pinning, the run-wide [`Control`] flags used for
//! shutdown, and the [`bridge`] between cores. It does not know what the roles do: it is handed
//! futures and runs them where they belong.

pub mod bridge;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::config::{CoreList, fmt_cores};

/// Placement and thread failures.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{flag} {value}: core {core} is not online for this process (online: {online})")]
    CoreNotOnline {
        flag: &'static str,
        value: String,
        core: usize,
        online: String,
    },
    #[error(
        "--fetch-cores {fetch} and --shard-cores {shard} overlap on {both}; give disjoint lists, or the same list to share cores"
    )]
    Overlap {
        fetch: String,
        shard: String,
        both: String,
    },
    #[error(
        "--shards {shards} is fewer than the {cores} shard cores; every shard core needs a shard"
    )]
    TooFewShards { shards: u32, cores: usize },
    #[error("cannot read the cores this process may run on")]
    Affinity(#[source] std::io::Error),
    #[error("cannot pin the {role} thread to core {core}")]
    Pin {
        role: &'static str,
        core: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the {role} executor on core {core}: {reason}")]
    Spawn {
        role: &'static str,
        core: usize,
        reason: String,
    },
    #[error("the {role} role on core {core} panicked: {message}")]
    Panicked {
        role: &'static str,
        core: usize,
        message: String,
    },
}

/// Run-wide flags every role reads between batches.
#[derive(Debug, Default)]
pub struct Control {
    /// Graceful: stop fetching, flush what was routed. Set by SIGINT/SIGTERM.
    stop: Arc<AtomicBool>,
    /// A role failed: stop everything, write nothing more.
    abort: AtomicBool,
}

impl Control {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The flag signal handlers set.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Graceful stop, as a signal does: stop fetching, commit what was routed.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub fn abort(&self) {
        self.abort.store(true, Ordering::Release);
    }

    pub fn is_aborted(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }

    /// Fetchers stop on either flag.
    pub fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Acquire) || self.is_aborted()
    }
}

/// Which core runs what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub fetch: Vec<usize>,
    pub shard: Vec<usize>,
    pub io: usize,
}

/// Tunes glibc's malloc for icefall's allocation pattern, once, before any thread starts.
///
/// Answer buffers (up to partitions × `--fetch-max-bytes`), Parquet pages and 4 MiB file chunks
/// are allocated and freed all run long. glibc serves blocks above its dynamic mmap threshold
/// with fresh mappings and trims freed heap tops back to the kernel, so every such block is
/// faulted in anew: about 150 MB of first touches per million records, which a VM bills as
/// system time (BENCHMARKS.md). A fixed 32 MiB mmap threshold and a 64 MiB trim threshold keep
/// those blocks in the heap for reuse; what a run holds at its peak is unchanged.
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// The cores this process may run on (its affinity mask: honours taskset, cgroups and offline CPUs).
pub fn online_cores() -> Result<Vec<usize>, RuntimeError> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for the calling thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(RuntimeError::Affinity(std::io::Error::last_os_error()));
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: i < CPU_SETSIZE.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect())
}

fn cores_str(cores: &[usize]) -> String {
    let mut s = String::new();
    let _ = fmt_cores(cores, &mut s);
    s
}

/// Resolves core lists against the online cores. Defaults: on one core everything runs there; on
/// more, the first core runs fetch and io and the others run shards.
pub fn place(
    online: &[usize],
    fetch: Option<&CoreList>,
    shard: Option<&CoreList>,
    io: Option<usize>,
) -> Result<Placement, RuntimeError> {
    let online_set: BTreeSet<usize> = online.iter().copied().collect();
    let check = |flag: &'static str, list: &CoreList| -> Result<(), RuntimeError> {
        match list.cores().iter().find(|c| !online_set.contains(c)) {
            Some(&core) => Err(RuntimeError::CoreNotOnline {
                flag,
                value: list.to_string(),
                core,
                online: cores_str(online),
            }),
            None => Ok(()),
        }
    };
    if let Some(l) = fetch {
        check("--fetch-cores", l)?;
    }
    if let Some(l) = shard {
        check("--shard-cores", l)?;
    }
    if let Some(core) = io
        && !online_set.contains(&core)
    {
        return Err(RuntimeError::CoreNotOnline {
            flag: "--io-core",
            value: core.to_string(),
            core,
            online: cores_str(online),
        });
    }
    let first = *online
        .first()
        .ok_or(RuntimeError::Affinity(std::io::Error::other(
            "no online core",
        )))?;
    let fetch_cores = match fetch {
        Some(l) => l.cores().to_vec(),
        None => match shard {
            // Prefer a core the shards do not use.
            Some(s) => vec![
                online
                    .iter()
                    .copied()
                    .find(|c| !s.contains(*c))
                    .unwrap_or(first),
            ],
            None => vec![first],
        },
    };
    let shard_cores = match shard {
        Some(l) => l.cores().to_vec(),
        None => {
            let rest: Vec<usize> = online
                .iter()
                .copied()
                .filter(|c| !fetch_cores.contains(c))
                .collect();
            if rest.is_empty() {
                fetch_cores.clone()
            } else {
                rest
            }
        }
    };
    let both: Vec<usize> = fetch_cores
        .iter()
        .copied()
        .filter(|c| shard_cores.contains(c))
        .collect();
    // Refuse a partial overlap the user asked for; a defaulted list may share a core.
    if !both.is_empty() && fetch.is_some() && shard.is_some() && fetch_cores != shard_cores {
        return Err(RuntimeError::Overlap {
            fetch: cores_str(&fetch_cores),
            shard: cores_str(&shard_cores),
            both: cores_str(&both),
        });
    }
    Ok(Placement {
        io: io.unwrap_or(fetch_cores[0]),
        fetch: fetch_cores,
        shard: shard_cores,
    })
}

/// Pins the calling thread to one core.
fn pin_current_thread(role: &'static str, core: usize) -> Result<(), RuntimeError> {
    // SAFETY: cpu_set_t is plain data; core < CPU_SETSIZE was checked by `place`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(core, &mut set) };
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(RuntimeError::Pin {
            role,
            core,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// A role running on its own thread.
pub struct RoleHandle<T: Send + 'static> {
    role: &'static str,
    core: usize,
    inner: RoleInner<T>,
}

enum RoleInner<T: Send + 'static> {
    Thread(JoinHandle<Result<T, RuntimeError>>),
    Glommio(glommio::ExecutorJoinHandle<T>),
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl<T: Send + 'static> RoleHandle<T> {
    pub fn join(self) -> Result<T, RuntimeError> {
        let (role, core) = (self.role, self.core);
        match self.inner {
            RoleInner::Thread(h) => h.join().map_err(|p| RuntimeError::Panicked {
                role,
                core,
                message: panic_message(p),
            })?,
            RoleInner::Glommio(h) => h.join().map_err(|e| RuntimeError::Panicked {
                role,
                core,
                message: e.to_string(),
            }),
        }
    }
}

/// Runs a future on a new thread pinned to `core`, on a tokio current-thread runtime (the fetch
/// and io roles: their clients need tokio).
pub fn spawn_tokio<F, Fut, T>(
    role: &'static str,
    core: usize,
    make: F,
) -> Result<RoleHandle<T>, RuntimeError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let handle = std::thread::Builder::new()
        .name(format!("icefall-{role}-{core}"))
        .spawn(move || {
            pin_current_thread(role, core)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| RuntimeError::Spawn {
                    role,
                    core,
                    reason: e.to_string(),
                })?;
            Ok(rt.block_on(make()))
        })
        .map_err(|e| RuntimeError::Spawn {
            role,
            core,
            reason: e.to_string(),
        })?;
    Ok(RoleHandle {
        role,
        core,
        inner: RoleInner::Thread(handle),
    })
}

/// Sleeps on the current glommio executor (shard cores).
/// Runs `fut` as a background task of the tokio role this is called on; it ends with the role.
pub fn detach(fut: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(fut);
}

pub async fn sleep(d: std::time::Duration) {
    glommio::timer::sleep(d).await;
}

/// Runs a future on a glommio executor pinned to `core` (the shard role).
pub fn spawn_glommio<F, Fut, T>(
    role: &'static str,
    core: usize,
    make: F,
) -> Result<RoleHandle<T>, RuntimeError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(core))
        .name(&format!("icefall-{role}"))
        // Shards do no glommio file I/O: keep locked memory small so many executors fit the
        // memlock limit.
        .io_memory(256 << 10)
        .spawn(make)
        .map_err(|e| RuntimeError::Spawn {
            role,
            core,
            reason: e.to_string(),
        })?;
    Ok(RoleHandle {
        role,
        core,
        inner: RoleInner::Glommio(handle),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> CoreList {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_split_first_core_from_the_rest() {
        let p = place(&[0, 1, 2, 3], None, None, None).unwrap();
        assert_eq!(
            p,
            Placement {
                fetch: vec![0],
                shard: vec![1, 2, 3],
                io: 0
            }
        );
        let one = place(&[5], None, None, None).unwrap();
        assert_eq!(
            one,
            Placement {
                fetch: vec![5],
                shard: vec![5],
                io: 5
            }
        );
    }

    #[test]
    fn shard_list_alone_picks_a_free_fetch_core() {
        let p = place(&[0, 1, 2], None, Some(&list("0-1")), None).unwrap();
        assert_eq!((p.fetch, p.shard, p.io), (vec![2], vec![0, 1], 2));
        let shared = place(&[0, 1], None, Some(&list("0-1")), None).unwrap();
        assert_eq!((shared.fetch, shared.shard), (vec![0], vec![0, 1]));
    }

    #[test]
    fn same_list_shares_cores_partial_overlap_is_refused() {
        let p = place(&[0, 1], Some(&list("0-1")), Some(&list("0-1")), None).unwrap();
        assert_eq!(p.fetch, p.shard);
        let e = place(&[0, 1, 2, 3], Some(&list("0-1")), Some(&list("1-3")), None).unwrap_err();
        assert!(e.to_string().contains("overlap on 1"), "{e}");
    }

    #[test]
    fn offline_cores_are_named() {
        let e = place(&[0, 1], None, Some(&list("1-4")), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--shard-cores 1-4: core 2 is not online") && e.contains("online: 0-1"),
            "{e}"
        );
        let e = place(&[0, 1], None, None, Some(9)).unwrap_err().to_string();
        assert!(e.starts_with("--io-core 9"), "{e}");
    }

    #[test]
    fn this_process_has_at_least_one_core() {
        assert!(!online_cores().unwrap().is_empty());
    }
}
