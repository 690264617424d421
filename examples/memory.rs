//! Giving back the pages of code a hub ran only to start.
//!
//! Starting a hub runs much code it does not run again: the config file's parser, the
//! sandbox's checks, the first environment of every function, the bridge's connect. The
//! kernel maps a program's code 64 KiB around every page it touches (fault-around), so
//! after start some 6 MiB of the binary stay resident while the idle hub uses a small part
//! of it (measured with the shipped config's kind of hub: 11.2 MiB resident, 1.8 MiB of it
//! anonymous). Those are clean pages of the binary file, which the kernel may take back at
//! any time; [`release_startup_code`] takes them out of the process's page tables at once,
//! and what the hub runs again faults back in from the page cache, without reading the disk.

use std::path::Path;

/// Drops the resident pages of this binary's code from the page tables (`MADV_DONTNEED` on
/// its executable mapping). Returns the bytes of code the advice covered. Only the
/// program's own text is touched: never data, never a library's mapping.
pub fn release_startup_code() -> std::io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut covered = 0;
    for (start, end) in executable_ranges(&maps, &exe) {
        #[allow(unsafe_code, reason = "madvise has no safe binding; see SAFETY")]
        // SAFETY: [start, end) is a whole mapping of this process, read from
        // /proc/self/maps: the binary's own code, mapped private, readable and executable,
        // never writable, so it holds nothing but the file's bytes. MADV_DONTNEED on such a
        // mapping only removes page-table entries; the next access (including by a thread
        // running in it meanwhile) faults the same bytes back in from the file. No Rust
        // object lives there, so no reference is invalidated.
        unsafe {
            rustix::mm::madvise(
                start as *mut std::ffi::c_void,
                end - start,
                rustix::mm::Advice::LinuxDontNeed,
            )?;
        }
        covered += end - start;
    }
    Ok(covered)
}

/// The `r-xp` mappings of `exe` in the text of `/proc/self/maps`.
fn executable_ranges(maps: &str, exe: &Path) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?.trim_start();
            if perms != "r-xp" || Path::new(path) != exe {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (start < end).then_some((start, end))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_programs_own_code_is_chosen() {
        let maps = "\
55d0c4e00000-55d0c52f5000 r--p 00000000 fe:01 123 /opt/hub/edge_hub
55d0c52f6000-55d0c6456000 r-xp 004f5000 fe:01 123 /opt/hub/edge_hub
55d0c6456000-55d0c6509000 rw-p 01654000 fe:01 123 /opt/hub/edge_hub
7f1e2c000000-7f1e2c021000 rw-p 00000000 00:00 0
7f1e2c200000-7f1e2c386000 r-xp 00028000 fe:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2c400000-7f1e2c401000 r-xp 00000000 fe:01 99 /opt/hub/edge_hub (deleted)
garbage line
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]";
        let ranges = executable_ranges(maps, Path::new("/opt/hub/edge_hub"));
        assert_eq!(ranges, [(0x55d0c52f6000, 0x55d0c6456000)]);
    }

    #[test]
    fn releasing_keeps_the_program_running() {
        let covered = release_startup_code().expect("madvise on our own code");
        assert!(covered > 0, "the test binary has code");
        // Code runs again after its pages were dropped: formatting faults its code back in.
        assert_eq!(format!("{:x}-{}", 255, 1.5), "ff-1.5");
        assert!(executable_ranges("", Path::new("/x")).is_empty());
    }
}
