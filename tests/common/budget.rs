//! Benchmark figures against the budgets of /DESIGN.md ("Budgets that shape every
//! decision"): each figure is printed with its budget and `ok`, or a loud `OVER`. A figure
//! over its budget does not fail the run (figures vary with the machine; people read them),
//! but the report ends with the list of those over.

/// Idle memory (RSS): 10 MB.
pub const IDLE_RSS_MB: f64 = 10.0;
/// Memory while active: 64 MB steady.
pub const ACTIVE_RSS_MB: f64 = 64.0;
/// Memory while active: 128 MB at the peak.
pub const PEAK_RSS_MB: f64 = 128.0;
/// Cold start: 0.5 s.
pub const COLD_START_MS: f64 = 500.0;
/// A local message reaches a local `/sync`: 5 ms.
pub const SEND_TO_SYNC_MS: f64 = 5.0;
/// Disk: twice the canonical JSON of the stored events.
pub const DISK_PER_CANONICAL_JSON: f64 = 2.0;

const MIB: f64 = 1024.0 * 1024.0;

/// The figures of one benchmark, printed as they come.
pub struct Report {
    over: Vec<String>,
}

impl Report {
    pub fn new(title: &str) -> Report {
        println!("{title}");
        Report { over: Vec::new() }
    }

    fn line(&mut self, label: &str, value: String, budget: Option<(String, bool)>) {
        match budget {
            None => println!("  {label:<36} {value:>12}"),
            Some((budget, true)) => println!("  {label:<36} {value:>12}  budget {budget:<10} ok"),
            Some((budget, false)) => {
                println!("  {label:<36} {value:>12}  budget {budget:<10} OVER  <<<<<<<<");
                self.over.push(format!("{label} {value} (budget {budget})"));
            }
        }
    }

    /// A memory figure in MiB, against a budget in MB (DESIGN.md's unit), if it has one.
    pub fn memory(&mut self, label: &str, mib: f64, budget_mb: Option<f64>) {
        let budget = budget_mb.map(|mb| (format!("{mb:.0} MB"), mib * MIB <= mb * 1e6));
        self.line(label, format!("{mib:.1} MiB"), budget);
    }

    /// A time in milliseconds, against a budget in milliseconds, if it has one.
    pub fn millis(&mut self, label: &str, ms: f64, budget_ms: Option<f64>) {
        let budget = budget_ms.map(|budget| (format!("{budget} ms"), ms <= budget));
        self.line(label, format!("{ms:.2} ms"), budget);
    }

    /// A ratio (disk per canonical JSON), against a budget, if it has one.
    pub fn ratio(&mut self, label: &str, ratio: f64, budget: Option<f64>) {
        let budget = budget.map(|budget| (format!("{budget:.1}×"), ratio <= budget));
        self.line(label, format!("{ratio:.2}×"), budget);
    }

    /// A memory figure in MiB against a goal in MiB (for goals set in MiB, not DESIGN.md's).
    pub fn memory_mib(&mut self, label: &str, mib: f64, goal_mib: f64) {
        let budget = Some((format!("{goal_mib:.0} MiB"), mib <= goal_mib));
        self.line(label, format!("{mib:.1} MiB"), budget);
    }

    /// A count against the most it may be.
    pub fn count(&mut self, label: &str, count: usize, most: usize) {
        let budget = Some((most.to_string(), count <= most));
        self.line(label, count.to_string(), budget);
    }

    /// A figure with no budget.
    pub fn figure(&mut self, label: &str, value: String) {
        self.line(label, value, None);
    }

    /// Prints which figures, if any, were over their budgets.
    pub fn finish(self) {
        if self.over.is_empty() {
            println!("  every figure with a budget is within it");
        } else {
            println!("  OVER BUDGET ({}):", self.over.len());
            for over in &self.over {
                println!("    OVER  {over}");
            }
        }
    }
}

/// Resident memory of process `pid` in MiB: `VmRSS:` now, `VmHWM:` at its peak.
pub fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Resident memory of process `pid` in MiB split as anonymous (heap, stacks) and
/// file-backed (the binary, mapped files), from `/proc/PID/smaps_rollup`.
pub fn rss_split_mib(pid: u32) -> (f64, f64) {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        rollup
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    let (rss, anonymous) = (field("Rss:"), field("Anonymous:"));
    (anonymous, rss - anonymous)
}

/// The bytes of the files under `dir`.
pub fn disk_usage(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => disk_usage(&entry.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The events stored in the database of the (stopped) server in `dir`: how many, and the
/// bytes of their canonical JSON (what "2× the canonical JSON of stored events" counts).
pub fn canonical_json_of_events(data_dir: &std::path::Path) -> (usize, u64) {
    let storage = hearth::storage::Storage::open(data_dir, 1 << 20).expect("open the database");
    let mut count = 0;
    let mut bytes = 0;
    for entry in storage.eventid_pdu.iter() {
        let (_, json) = entry.expect("read an event");
        count += 1;
        bytes += json.len() as u64;
    }
    (count, bytes)
}

/// Prints where the bytes of the (stopped) server's database in `data_dir` go: each tree's
/// entries and logical bytes (keys, values) and per event, largest first, then the total
/// beside the database's size on disk (sled's log: page versions, headers, free space).
pub fn print_trees(data_dir: &std::path::Path, events: usize) {
    let storage = hearth::storage::Storage::open(data_dir, 1 << 20).expect("open the database");
    let mut trees = storage.footprint_by_tree().expect("tree footprints");
    trees.sort_by_key(|tree| std::cmp::Reverse(tree.key_bytes + tree.value_bytes));
    let events = events.max(1) as f64;
    println!(
        "  where the bytes go ({events} events): tree, entries, key bytes, value bytes, per event"
    );
    let (mut keys, mut values) = (0, 0);
    for tree in trees.iter().filter(|tree| tree.entries > 0) {
        keys += tree.key_bytes;
        values += tree.value_bytes;
        println!(
            "    {:<26} {:>8} {:>10} {:>10} {:>8.0} B",
            tree.name,
            tree.entries,
            tree.key_bytes,
            tree.value_bytes,
            (tree.key_bytes + tree.value_bytes) as f64 / events
        );
    }
    let on_disk = storage.size_on_disk().expect("size on disk");
    println!(
        "    {:<26} {:>8} {:>10} {:>10} {:>8.0} B",
        "all trees (logical)",
        "",
        keys,
        values,
        (keys + values) as f64 / events
    );
    println!(
        "    {:<26} {:>8} {:>21} {:>8.0} B",
        "sled size on disk",
        "",
        on_disk,
        on_disk as f64 / events
    );
}

/// Resident KiB of process `pid` by mapping (`/proc/PID/smaps`), anonymous and file-backed,
/// summed by what holds the pages, largest first: a file with the mapping's permissions
/// (`hearth r-xp` is code, `r--p` read-only data, `rw-p` data relocated at start),
/// `[heap]`, `[stack]`, and anonymous mappings split into malloc arenas (glibc aligns each
/// thread arena's heap to its 64 MiB reservation), thread stacks (the 2 MiB mappings after a
/// guard page) and the rest (large allocations made with `mmap`).
pub fn resident_by_mapping(pid: u32) -> Vec<(String, u64, u64)> {
    const ARENA_ALIGN: u64 = 64 * 1024 * 1024;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by_name: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut name = String::new();
    let mut rss = 0;
    let mut previous_end = 0u64;
    let mut previous_guard = false;
    let field = |line: &str| -> u64 {
        line.split_whitespace()
            .nth(1)
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let (start, end) = first.split_once('-').unwrap_or(("0", "0"));
            let start = u64::from_str_radix(start, 16).unwrap_or(0);
            let end = u64::from_str_radix(end, 16).unwrap_or(0);
            let perms = words.next().unwrap_or("");
            let path = words.nth(3);
            let after_guard = previous_guard && previous_end == start;
            previous_guard = perms == "---p" && path.is_none();
            previous_end = end;
            name = match path {
                Some(path) if path.starts_with('[') => path.to_owned(),
                Some(path) => {
                    let file = path.rsplit('/').next().unwrap_or(path);
                    format!("{file} {perms}")
                }
                None if start % ARENA_ALIGN == 0 => "[malloc arenas of threads]".to_owned(),
                None if after_guard => "[thread stacks]".to_owned(),
                None => "[anonymous, other]".to_owned(),
            };
        } else if line.starts_with("Rss:") {
            rss = field(line);
        } else if line.starts_with("Anonymous:") {
            let anonymous = field(line);
            let entry = by_name.entry(name.clone()).or_default();
            entry.0 += anonymous;
            entry.1 += rss.saturating_sub(anonymous);
        }
    }
    let mut mappings: Vec<(String, u64, u64)> = by_name
        .into_iter()
        .map(|(name, (anonymous, file))| (name, anonymous, file))
        .collect();
    mappings.sort_by_key(|(_, anonymous, file)| std::cmp::Reverse(anonymous + file));
    mappings
}

/// The threads of process `pid` by name (`/proc/PID/task/*/comm`), most first.
pub fn threads_by_name(pid: u32) -> Vec<(String, usize)> {
    let mut by_name: std::collections::BTreeMap<String, usize> = Default::default();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        // Numbered threads (`sled-io-3`) count under one name.
        let name = comm.trim().trim_end_matches(|c: char| c.is_ascii_digit());
        *by_name.entry(name.to_owned()).or_default() += 1;
    }
    let mut threads: Vec<(String, usize)> = by_name.into_iter().collect();
    threads.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    threads
}

/// Where a process's resident memory is, and its threads: taken while it runs, printed later.
pub struct Resident {
    pub mappings: Vec<(String, u64, u64)>,
    pub threads: Vec<(String, usize)>,
}

impl Resident {
    pub fn of(pid: u32) -> Resident {
        Resident {
            mappings: resident_by_mapping(pid),
            threads: threads_by_name(pid),
        }
    }

    /// Prints the `most` largest mappings and the threads, headed by `title`.
    pub fn print(&self, title: &str, most: usize) {
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!("  {title}: resident memory by mapping, largest first:");
        for (name, anonymous, file) in self.mappings.iter().take(most) {
            println!(
                "    {name:<44} anonymous {:>7.2} MiB  file {:>7.2} MiB",
                mib(*anonymous),
                mib(*file)
            );
        }
        let total: usize = self.threads.iter().map(|(_, count)| count).sum();
        let list: Vec<String> = self
            .threads
            .iter()
            .map(|(name, count)| format!("{name} ×{count}"))
            .collect();
        println!("  {title}: {total} threads: {}", list.join(", "));
    }
}
