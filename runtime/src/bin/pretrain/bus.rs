//! SIGBUS: the fault a memory-mapped dataset file raises when it is truncated while mapped.
//! Rust cannot unwind from it, so the handler says which file (the library's
//! `data::mapped` registry knows the map of the faulting address), and exits 3 (invalid data)
//! in place of the silent "Bus error" death.

/// Installs the handler (for the whole process).
pub fn install() {
    // SAFETY: sigaction(2) with a zeroed struct, a handler of the SA_SIGINFO signature and an
    // empty mask; the handler only reads atomics, calls write(2) and _exit(2), all
    // async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_bus_error as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) != 0 {
            tracing::warn!("cannot handle SIGBUS: a truncated dataset file will kill the process without a message");
        }
    }
}

extern "C" fn on_bus_error(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers; si_addr is the
    // faulting address for SIGBUS.
    let addr = unsafe { (*info).si_addr() } as usize;
    let msg = pretrain::data::mapped::fault_message(addr);
    // SAFETY: write(2) of a 'static buffer to stderr and _exit(2): async-signal-safe.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(pretrain::exit::DATA_INVALID);
    }
}
