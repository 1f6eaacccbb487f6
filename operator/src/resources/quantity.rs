//! Kubernetes resource quantities (`500m`, `1.5Gi`, `64`), multiplied exactly: the gang's
//! total of a per-pod request. A quantity is a decimal number and a suffix; the product keeps
//! the suffix, so no unit conversion (and no rounding) is ever needed.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The suffixes Kubernetes accepts (binary, decimal SI, and none).
const SUFFIXES: [&str; 14] = [
    "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
];

/// `q × n`, written with `q`'s suffix: `1.5Gi × 4 = 6Gi`, `500m × 3 = 1500m`. `None` when `q`
/// is not a non-negative quantity in that form (exponent forms like `1e3` are not
/// supported) or the product does not fit.
pub fn times(q: &Quantity, n: u32) -> Option<Quantity> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if !SUFFIXES.contains(&suffix) {
        return None;
    }
    let number = number.strip_prefix('+').unwrap_or(number);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    if !digits.chars().all(|c| c.is_ascii_digit()) || digits.len() > 30 {
        return None;
    }
    let mantissa: u128 = digits.parse().ok()?;
    let product = mantissa.checked_mul(u128::from(n))?.to_string();
    // Put the decimal point back `fraction.len()` digits from the right, then drop the zeros
    // it leaves at the end.
    let scale = fraction.len();
    let padded = format!("{product:0>width$}", width = scale + 1);
    let (int_part, frac_part) = padded.split_at(padded.len() - scale);
    let frac_part = frac_part.trim_end_matches('0');
    let number = if frac_part.is_empty() {
        int_part.to_string()
    } else {
        format!("{int_part}.{frac_part}")
    };
    Some(Quantity(format!("{number}{suffix}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(q: &str, n: u32) -> Option<String> {
        times(&Quantity(q.into()), n).map(|q| q.0)
    }

    #[test]
    fn products_keep_the_suffix_and_are_exact() {
        assert_eq!(t("64", 4).as_deref(), Some("256"));
        assert_eq!(t("1.5Gi", 4).as_deref(), Some("6Gi"));
        assert_eq!(t("1.25", 3).as_deref(), Some("3.75"));
        assert_eq!(t("500m", 3).as_deref(), Some("1500m"));
        assert_eq!(t("0.1", 3).as_deref(), Some("0.3"));
        assert_eq!(t(".5", 2).as_deref(), Some("1"));
        assert_eq!(t("8", 0).as_deref(), Some("0"));
        assert_eq!(t("512Gi", 16).as_deref(), Some("8192Gi"));
    }

    #[test]
    fn what_is_not_a_plain_quantity_is_refused() {
        for bad in ["", "Gi", "-1", "1e3", "1.2.3", "12 Gi", "1GB", "."] {
            assert_eq!(t(bad, 2), None, "{bad}");
        }
    }
}
