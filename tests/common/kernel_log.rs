//! A guest kernel's log, read with `dmesg -r` (each line with its `<priority>`), and the warnings
//! in it that say fennec described the machine badly.

/// The log's warnings and worse (priority 4 or lower), one line each, without the ones the
/// project's nested test host causes by itself (see [`drop_environment`]).
pub fn warnings(raw: &str) -> Vec<String> {
    let lines: Vec<(u32, &str)> = raw
        .lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix('<')?;
            let (level, text) = rest.split_once('>')?;
            // The facility is in the upper bits; the kernel's own are 0.
            let level: u32 = level.parse().ok()?;
            let text = match text.trim_start().strip_prefix('[') {
                Some(timed) => timed.split_once(']').map_or(timed, |(_, t)| t).trim_start(),
                None => text,
            };
            Some((level & 7, text))
        })
        .collect();
    drop_environment(&lines)
        .into_iter()
        .filter(|(level, _)| *level <= 4)
        .map(|(_, text)| text.to_string())
        .collect()
}

/// Removes what the test host's emulated SVM causes whatever the VMM does: it does not intercept
/// XSETBV, so KVM never learns that the guest enabled AVX and keeps reporting the XSAVE area's
/// reset-state size (576 bytes) in CPUID; Linux's consistency check then warns, with a
/// backtrace and a dump of leaf 0xD. Only that exact warning is dropped: one with any other
/// size would be fennec's CPUID and stays.
fn drop_environment<'a>(lines: &[(u32, &'a str)]) -> Vec<(u32, &'a str)> {
    let mut kept = Vec::new();
    let mut block: Vec<(u32, &'a str)> = Vec::new();
    let mut in_block = false;
    let mut after_xsave_warning = false;
    for &(level, text) in lines {
        if text.contains("[ cut here ]") {
            in_block = true;
            block.clear();
        }
        if in_block {
            block.push((level, text));
            if text.starts_with("---[ end trace") {
                in_block = false;
                let xsave = block.iter().any(|(_, t)| {
                    t.starts_with("XSAVE consistency problem:") && t.ends_with("kernel_size 576")
                });
                after_xsave_warning = xsave;
                if !xsave {
                    kept.append(&mut block);
                }
                block.clear();
            }
            continue;
        }
        if after_xsave_warning && text.starts_with("CPUID[0d, ") {
            continue;
        }
        after_xsave_warning = false;
        kept.push((level, text));
    }
    // A block the log ends in is kept whole.
    kept.extend(block);
    kept
}
