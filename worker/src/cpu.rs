//! The machine's CPU usage, from `/proc/stat` (Linux); 0 where it cannot be read.

#[derive(Debug, Default)]
pub struct CpuMeter {
    previous: Option<(u64, u64)>,
}

fn read_totals() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|field| field.parse().ok()).collect();
    if values.len() < 4 {
        return None;
    }
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    Some((values.iter().sum(), idle))
}

impl CpuMeter {
    /// Usage in percent since the previous call (0 on the first).
    pub fn sample(&mut self) -> f64 {
        let Some((total, idle)) = read_totals() else {
            return 0.0;
        };
        let usage = match self.previous {
            Some((previous_total, previous_idle)) if total > previous_total => {
                let busy = (total - previous_total).saturating_sub(idle.saturating_sub(previous_idle));
                100.0 * busy as f64 / (total - previous_total) as f64
            }
            _ => 0.0,
        };
        self.previous = Some((total, idle));
        usage.clamp(0.0, 100.0)
    }
}
