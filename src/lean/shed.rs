//! Giving back the pages of pgboot's binary that starting up touched.
//!
//! Starting (relocating a static-pie binary, reading the arguments, spawning)
//! faults in code that the supervise loop never runs again, and the kernel
//! maps file pages 64 KiB at a time around each fault (`fault_around_bytes`):
//! about 1.2 MiB of pgboot's text was resident before the loop's first
//! `read`, measured. Read-only private mappings of the binary can be dropped
//! (`madvise(MADV_DONTNEED)`): their pages are the file's, and the few the
//! loop needs fault back in from the page cache. A mapping holding any page
//! of its own (`Anonymous` in smaps: relocated or written data) is left
//! alone, since dropping would bring back the file's unrelocated bytes.

use std::ops::Range;

/// Drops the resident pages of the read-only mappings of this executable.
/// Best effort: anything unexpected leaves the pages where they are.
pub fn drop_startup_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let here = drop_startup_pages as *const () as usize;
    for range in droppable(&smaps, here) {
        #[allow(unsafe_code)]
        // SAFETY: `range` is a whole mapping of our own executable, read-only
        // and private, with no anonymous (modified) page: MADV_DONTNEED only
        // unmaps its pages, and a later access reads the same bytes back from
        // the file. No Rust reference can be invalidated by that.
        unsafe {
            libc::madvise(
                range.start as *mut libc::c_void,
                range.end - range.start,
                libc::MADV_DONTNEED,
            );
        }
    }
}

/// The mappings of the file that holds the address `here` (this code) that
/// are not writable and hold no anonymous page, from `/proc/self/smaps`.
fn droppable(smaps: &str, here: usize) -> Vec<Range<usize>> {
    struct Mapping<'a> {
        range: Range<usize>,
        writable: bool,
        file: &'a str,
        anonymous_kb: u64,
    }
    let mut maps: Vec<Mapping<'_>> = Vec::new();
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            let perms = f.next().unwrap_or("");
            let file = f.nth(3).unwrap_or("");
            maps.push(Mapping {
                range: start..end,
                writable: perms.contains('w'),
                file,
                anonymous_kb: 0,
            });
            continue;
        }
        if first == "Anonymous:"
            && let Some(m) = maps.last_mut()
        {
            m.anonymous_kb = f.next().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
        }
    }
    let Some(exe) = maps
        .iter()
        .find(|m| m.range.contains(&here))
        .map(|m| m.file)
        .filter(|f| f.starts_with('/'))
    else {
        return Vec::new();
    };
    maps.iter()
        .filter(|m| m.file == exe && !m.writable && m.anonymous_kb == 0)
        .map(|m| m.range.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
7f00000000-7f00023000 r--p 00000000 fe:00 55 /usr/bin/pgboot
Rss:                 140 kB
Anonymous:             0 kB
7f00023000-7f00271000 r-xp 00023000 fe:00 55 /usr/bin/pgboot
Rss:                1248 kB
Anonymous:             0 kB
7f00271000-7f0036a000 r--p 00271000 fe:00 55 /usr/bin/pgboot
Rss:                 188 kB
Anonymous:             4 kB
7f0036a000-7f00386000 rw-p 0036a000 fe:00 55 /usr/bin/pgboot
Anonymous:           112 kB
7f00400000-7f00401000 r--p 00000000 fe:00 77 /usr/lib/other.so
Anonymous:             0 kB
7f00500000-7f00501000 rw-p 00000000 00:00 0
Anonymous:             4 kB
";

    #[test]
    fn only_clean_read_only_mappings_of_the_executable() {
        assert_eq!(
            droppable(SMAPS, 0x7f_0003_0000),
            vec![
                0x7f_0000_0000..0x7f_0002_3000,
                0x7f_0002_3000..0x7f_0027_1000
            ]
        );
        // An address in no file mapping: nothing.
        assert!(droppable(SMAPS, 0x7f_0050_0000).is_empty());
    }

    #[test]
    fn this_process_has_something_to_drop() {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let here = drop_startup_pages as *const () as usize;
        let ranges = droppable(&smaps, here);
        assert!(ranges.iter().any(|r| r.contains(&here)), "{ranges:x?}");
    }
}
