//! The event loop and everything that touches sockets: the only place where the
//! protocols and the store meet (`dispatch` executes, `binary` and `text` drive
//! their protocol's parser and encoder).

pub mod arrival;
pub mod binary;
pub mod connection;
pub mod conns;
pub mod dispatch;
pub mod event_loop;
pub mod log_limit;
pub mod meta;
pub mod sasl;
pub mod stats;
pub mod text;

pub use event_loop::{log_start, Server};

/// Pins the whole process (it is one thread) to CPU `cpu`.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds-checks against its size
    // only in debug, so check the index ourselves first.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("core {cpu} does not exist"),
            ));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            let err = std::io::Error::last_os_error();
            return Err(std::io::Error::new(
                err.kind(),
                format!("core {cpu} is not available to this process ({err})"),
            ));
        }
    }
    Ok(())
}
