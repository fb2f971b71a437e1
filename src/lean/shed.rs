//! Giving back the pages of pgboot's binary that starting up touched.
//!
//! Starting (relocating a static-pie binary, reading the arguments, spawning)
//! faults in code that the supervise loop never runs again, and the kernel
//! maps file pages 64 KiB at a time around each fault (`fault_around_bytes`):
//! about 1.2 MiB of pgboot's text was resident before the loop's first
//! `read`, measured. The executable's read-only segments (code, constants)
//! can be dropped (`madvise(MADV_DONTNEED)`): their pages are the file's,
//! and the few the loop needs fault back in from the page cache.
//!
//! When: 10 ms into supervising, between two signals (`lean/mod.rs`), so
//! that a command which is over by then never pays for it.
//!
//! Which segments: the loader's own description of the executable, its
//! `PT_LOAD` program headers without the write flag (`dl_iterate_phdr(3)`).
//! The relocated constants (`PT_GNU_RELRO`) lie in the writable segment and
//! are left alone: dropping them would bring back the file's unrelocated
//! bytes. Reading `/proc/self/smaps` instead took about half a millisecond
//! (the kernel walks every mapping's pages to write it), and a signal that
//! arrived meanwhile waited that long to be forwarded (issue 12).

use std::ops::Range;

/// Drops the resident pages of this executable's read-only segments. Best
/// effort: anything unexpected leaves the pages where they are.
pub fn drop_startup_pages() {
    let ranges = droppable(&executable_segments(), page_size());
    for range in &ranges {
        #[allow(unsafe_code)]
        // SAFETY: `range` is whole pages of a read-only, private, file-backed
        // segment of our own executable: MADV_DONTNEED only unmaps them, and
        // a later access reads the same bytes back from the file. No Rust
        // reference can be invalidated by that.
        unsafe {
            libc::madvise(
                range.start as *mut libc::c_void,
                range.end - range.start,
                libc::MADV_DONTNEED,
            );
        }
    }
    let kib = ranges
        .iter()
        .map(|r| (r.end - r.start) / 1024)
        .sum::<usize>();
    tracing::debug!(kib, "gave back the startup pages of the code and constants");
}

/// A loadable segment of the executable, at its address in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    memory: Range<usize>,
    writable: bool,
}

/// The pages wholly inside read-only segments. Rounded inwards: a page a
/// segment shares with a writable neighbour is never dropped.
fn droppable(segments: &[Segment], page: usize) -> Vec<Range<usize>> {
    segments
        .iter()
        .filter(|s| !s.writable && page.is_power_of_two())
        .filter_map(|s| {
            let start = s.memory.start.checked_add(page - 1)? & !(page - 1);
            let end = s.memory.end & !(page - 1);
            (start < end).then_some(start..end)
        })
        .collect()
}

fn page_size() -> usize {
    #[allow(unsafe_code)]
    // SAFETY: sysconf reads a constant of the system.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(0)
}

/// The executable's `PT_LOAD` segments, from the loader (the first object
/// `dl_iterate_phdr` reports is the program itself).
fn executable_segments() -> Vec<Segment> {
    #[allow(unsafe_code)]
    unsafe extern "C" fn first_object(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `Vec` passed below, alive and not otherwise
        // borrowed during the call; `info` and its program headers are the
        // loader's, valid during the callback.
        unsafe {
            let out = &mut *data.cast::<Vec<Segment>>();
            let Some(info) = info.as_ref() else { return 1 };
            if !info.dlpi_phdr.is_null() {
                let phdrs =
                    std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
                out.extend(
                    phdrs
                        .iter()
                        .filter(|p| p.p_type == libc::PT_LOAD)
                        .filter_map(|p| {
                            let bias = usize::try_from(info.dlpi_addr).ok()?;
                            let start = bias.checked_add(usize::try_from(p.p_vaddr).ok()?)?;
                            let end = start.checked_add(usize::try_from(p.p_memsz).ok()?)?;
                            Some(Segment {
                                memory: start..end,
                                writable: p.p_flags & libc::PF_W != 0,
                            })
                        }),
                );
            }
        }
        // Stop: the program is first, the libraries after it do not matter.
        1
    }
    let mut segments: Vec<Segment> = Vec::new();
    #[allow(unsafe_code)]
    // SAFETY: the callback only reads what the loader hands it and writes
    // to `segments` through `data`, during this call.
    unsafe {
        libc::dl_iterate_phdr(Some(first_object), (&raw mut segments).cast());
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: usize, end: usize, writable: bool) -> Segment {
        Segment {
            memory: start..end,
            writable,
        }
    }

    #[test]
    fn only_whole_pages_of_read_only_segments() {
        let segments = [
            seg(0x10_0000, 0x12_2a10, false),
            seg(0x12_3a10, 0x37_0c55, false),
            seg(0x37_1c58, 0x38_0000, true),
            seg(0x38_0000, 0x38_0800, false),
        ];
        assert_eq!(
            droppable(&segments, 0x1000),
            vec![0x10_0000..0x12_2000, 0x12_4000..0x37_0000]
        );
        assert!(droppable(&segments, 0).is_empty(), "no page size, no drop");
    }

    #[test]
    fn this_executables_code_is_droppable_and_its_data_is_not() {
        static WRITABLE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let ranges = droppable(&executable_segments(), page_size());
        let code = drop_startup_pages as *const () as usize;
        let data = (&raw const WRITABLE) as usize;
        assert!(ranges.iter().any(|r| r.contains(&code)), "{ranges:x?}");
        assert!(!ranges.iter().any(|r| r.contains(&data)), "{ranges:x?}");
    }
}
