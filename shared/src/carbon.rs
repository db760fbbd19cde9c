//! Carbon credits in exact integers.
//!
//! Units: energy in micro-watt-hours (µWh), carbon in nanograms of CO₂ (ng), money in pico-euros
//! (p€, 10⁻¹² €). They are fine enough that a task of a few milliseconds still earns a non-zero
//! credit, and an `i64` still holds 9.2 million euros in one entry. Every division rounds down;
//! the cooperative's share is the total minus the node's share, so the two always add up exactly.
//!
//! ```text
//! carbon_ng  = solar_µWh × intensity_mg_per_kWh / 1 000            (1 kWh = 10⁹ µWh, 1 mg = 10⁶ ng)
//! total_p€   = carbon_ng × price_p€_per_kg / 10¹²                  (1 kg = 10¹² ng)
//! node_p€    = total_p€ × node_percent / 100
//! coop_p€    = total_p€ − node_p€
//! ```

use serde::{Deserialize, Serialize};

/// Energy in micro-watt-hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MicroWattHours(pub i64);

/// Mass of CO₂ in nanograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Nanograms(pub i64);

/// Money in pico-euros (10⁻¹² €).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PicoEuros(pub i64);

/// The most energy one report may claim: 1 MWh, far above any Raspberry Pi task.
pub const MAX_REPORTED_WH: f64 = 1_000_000.0;

impl MicroWattHours {
    /// Converts a watt-hour figure from a report, rounded to the nearest µWh.
    pub fn from_wh(field: &str, wh: f64) -> Result<Self, crate::domain::FieldError> {
        if !wh.is_finite() || !(0.0..=MAX_REPORTED_WH).contains(&wh) {
            return Err(crate::domain::FieldError::new(
                field,
                format!("must be a number between 0 and {MAX_REPORTED_WH}"),
            ));
        }
        Ok(Self((wh * 1_000_000.0).round() as i64))
    }

    /// For display only: never compute with it.
    pub fn as_wh(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

impl Nanograms {
    /// For display only: never compute with it.
    pub fn as_kg(self) -> f64 {
        self.0 as f64 / 1e12
    }
}

impl PicoEuros {
    /// For display only: never compute with it.
    pub fn as_eur(self) -> f64 {
        self.0 as f64 / 1e12
    }

    /// The exact amount as a decimal string of euros, e.g. `"0.000189000000"`.
    pub fn to_eur_string(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let magnitude = self.0.unsigned_abs();
        format!("{sign}{}.{:012}", magnitude / 1_000_000_000_000, magnitude % 1_000_000_000_000)
    }
}

/// The rates that turn solar energy into credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarbonPolicy {
    /// Grid carbon intensity avoided by solar, in mg CO₂ per kWh (0.18 kg/kWh = 180 000).
    pub grid_intensity_mg_per_kwh: i64,
    /// Credit price in pico-euros per kg CO₂ (0.025 €/kg = 25 000 000 000).
    pub price_pico_eur_per_kg: i64,
    /// The node owner's percentage of the value; the cooperative fund gets the rest.
    pub node_share_percent: u8,
}

impl Default for CarbonPolicy {
    /// The KoproGo README's Belgian figures: 0.18 kg/kWh, €0.025/kg, 70 % to the node.
    fn default() -> Self {
        Self { grid_intensity_mg_per_kwh: 180_000, price_pico_eur_per_kg: 25_000_000_000, node_share_percent: 70 }
    }
}

/// The credits earned by one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CreditSplit {
    pub carbon_saved: Nanograms,
    pub total: PicoEuros,
    pub node_share: PicoEuros,
    pub cooperative_share: PicoEuros,
}

impl CarbonPolicy {
    /// Credits for a task that drew `solar` from the sun, at the fixed intensity.
    pub fn credit(&self, solar: MicroWattHours) -> CreditSplit {
        self.credit_at(solar, self.grid_intensity_mg_per_kwh)
    }

    /// Credits for a task that drew `solar` from the sun where the grid it displaced emitted
    /// `intensity_mg_per_kwh` (the signal of the node's zone and hour). Negative energy or
    /// intensity earns nothing.
    pub fn credit_at(&self, solar: MicroWattHours, intensity_mg_per_kwh: i64) -> CreditSplit {
        let solar_uwh = i128::from(solar.0.max(0));
        let carbon_ng = solar_uwh * i128::from(intensity_mg_per_kwh.max(0)) / 1_000;
        let total = carbon_ng * i128::from(self.price_pico_eur_per_kg) / 1_000_000_000_000;
        let node = total * i128::from(self.node_share_percent) / 100;
        let split = CreditSplit {
            carbon_saved: Nanograms(saturate(carbon_ng)),
            total: PicoEuros(saturate(total)),
            node_share: PicoEuros(saturate(node)),
            cooperative_share: PicoEuros(saturate(total - node)),
        };
        debug_assert_eq!(split.node_share.0 + split.cooperative_share.0, split.total.0);
        split
    }
}

/// Milliseconds in a year of 365.25 days (an embodied lifetime's unit).
pub const MS_PER_YEAR: i64 = 31_557_600_000;

/// The Software Carbon Intensity of one task (ISO/IEC 21031:2024, SCI = (E × I + M) per R, with
/// R one task): its operational emissions, the grid energy at the grid's intensity plus the
/// sun's energy at the panels' own life-cycle factor, and its embodied share, the node's
/// embodied emissions for the time the task held one of its cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sci {
    pub operational_ng: i64,
    pub embodied_ng: i64,
}

impl Sci {
    pub fn total_ng(&self) -> i64 {
        self.operational_ng.saturating_add(self.embodied_ng)
    }

    /// The operational part of one result: `(energy − solar) × intensity ÷ 1000 + solar ×
    /// solar_intensity ÷ 1000` (ng, from µWh and mg/kWh).
    pub fn operational(
        energy: MicroWattHours,
        solar: MicroWattHours,
        intensity_mg_per_kwh: i64,
        solar_intensity_mg_per_kwh: i64,
    ) -> i64 {
        let solar_uwh = i128::from(solar.0.max(0));
        let grid_uwh = (i128::from(energy.0) - solar_uwh).max(0);
        saturate(
            grid_uwh * i128::from(intensity_mg_per_kwh.max(0)) / 1_000
                + solar_uwh * i128::from(solar_intensity_mg_per_kwh.max(0)) / 1_000,
        )
    }

    /// The embodied share of a task that held one of `cpu_cores` cores for `runtime_ms` of a
    /// node whose making emitted `embodied_g` g CO₂e over `lifetime_ms`: `TE × (TiR ÷ EL) × (RR ÷
    /// ToR)` in the specification's terms (ng).
    pub fn embodied(embodied_g: i64, runtime_ms: i64, lifetime_ms: i64, cpu_cores: u16) -> i64 {
        let denominator = i128::from(lifetime_ms.max(1)) * i128::from(cpu_cores.max(1));
        saturate(i128::from(embodied_g.max(0)) * 1_000_000_000 * i128::from(runtime_ms.max(0)) / denominator)
    }
}

fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Parses a non-negative decimal such as `"0.18"` into an integer scaled by 10^`scale`
/// (`"0.18"` at scale 6 is `180_000`), exactly, refusing digits beyond the scale.
pub fn parse_scaled_decimal(text: &str, scale: u32) -> Result<i64, String> {
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits_only = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !digits_only(whole) || !digits_only(fraction) {
        return Err(format!("{text:?} is not a non-negative decimal number"));
    }
    if fraction.len() > scale as usize {
        return Err(format!("{text:?} has more than {scale} decimal places"));
    }
    let padded = format!("{fraction:0<width$}", width = scale as usize);
    let whole: i64 = whole.parse().map_err(|_| format!("{text:?} is too large"))?;
    let fraction: i64 =
        if padded.is_empty() { 0 } else { padded.parse().map_err(|_| format!("{text:?} is too large"))? };
    whole
        .checked_mul(10_i64.pow(scale))
        .and_then(|scaled| scaled.checked_add(fraction))
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_koprogo_readme_example_is_exact() {
        // 100 Wh total, 60 Wh of it solar.
        let solar = MicroWattHours::from_wh("solar", 60.0).unwrap();
        let split = CarbonPolicy::default().credit(solar);
        assert_eq!(split.carbon_saved, Nanograms(10_800_000_000)); // 0.0108 kg
        assert_eq!(split.total, PicoEuros(270_000_000)); // €0.00027
        assert_eq!(split.node_share, PicoEuros(189_000_000)); // €0.000189
        assert_eq!(split.cooperative_share, PicoEuros(81_000_000)); // €0.000081
        assert_eq!(split.node_share.to_eur_string(), "0.000189000000");
        assert_eq!(split.cooperative_share.to_eur_string(), "0.000081000000");
    }

    #[test]
    fn a_millisecond_of_solar_still_earns_something() {
        let split = CarbonPolicy::default().credit(MicroWattHours(50));
        assert_eq!(split.carbon_saved, Nanograms(9_000));
        assert_eq!(split.total, PicoEuros(225));
        assert_eq!(split.node_share, PicoEuros(157));
        assert_eq!(split.cooperative_share, PicoEuros(68));
    }

    #[test]
    fn reported_watt_hours_are_checked() {
        assert_eq!(MicroWattHours::from_wh("x", 12.5).unwrap(), MicroWattHours(12_500_000));
        assert!(MicroWattHours::from_wh("x", -1.0).is_err());
        assert!(MicroWattHours::from_wh("x", f64::NAN).is_err());
        assert!(MicroWattHours::from_wh("x", 2e6).is_err());
    }

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(parse_scaled_decimal("0.18", 6), Ok(180_000));
        assert_eq!(parse_scaled_decimal("0.025", 12), Ok(25_000_000_000));
        assert_eq!(parse_scaled_decimal("2", 3), Ok(2_000));
        assert!(parse_scaled_decimal("0.1234567", 6).is_err());
        assert!(parse_scaled_decimal("-1", 6).is_err());
        assert!(parse_scaled_decimal("1e3", 6).is_err());
        assert!(parse_scaled_decimal("", 6).is_err());
    }

    #[test]
    fn sci_is_operational_plus_embodied_in_exact_integers() {
        // 100 mWh, 60 of them solar: 40 mWh at 180 g/kWh = 7.2 mg; 60 mWh at 41 g/kWh = 2.46 mg.
        let operational = Sci::operational(MicroWattHours(100_000), MicroWattHours(60_000), 180_000, 41_000);
        assert_eq!(operational, 7_200_000 + 2_460_000);
        // 10 kg over 5 years, one of 4 cores for a minute: 10¹³ ng × 60,000 ms ÷ (157,788,000,000 ms × 4),
        // rounded down.
        let five_years_ms = 5 * MS_PER_YEAR;
        assert_eq!(Sci::embodied(10_000, 60_000, five_years_ms, 4), 950_642);
        assert_eq!(Sci { operational_ng: 3, embodied_ng: 4 }.total_ng(), 7);
        assert_eq!(
            Sci::operational(MicroWattHours(10), MicroWattHours(50), 1_000, 0),
            0,
            "solar above energy: no grid"
        );
    }

    proptest! {
        #[test]
        fn shares_always_add_up_to_the_total(solar in 0i64..1_000_000_000_000, percent in 0u8..=100) {
            let policy = CarbonPolicy { node_share_percent: percent, ..CarbonPolicy::default() };
            let split = policy.credit(MicroWattHours(solar));
            prop_assert_eq!(split.node_share.0 + split.cooperative_share.0, split.total.0);
            prop_assert!(split.node_share.0 >= 0 && split.cooperative_share.0 >= 0);
        }
    }
}
