//! PostgreSQL's `numeric` on-disk form, built from decimal text the way `numeric_in` builds it,
//! so that a number written here is byte for byte the one `jsonb_in` would store.

use crate::Error;

/// Decimal digits per base-10000 digit (`DEC_DIGITS`).
const DEC_DIGITS: i32 = 4;
const NUMERIC_SHORT: u16 = 0x8000;
const NUMERIC_SHORT_SIGN_MASK: u16 = 0x2000;
const NUMERIC_SHORT_DSCALE_SHIFT: u16 = 7;
const NUMERIC_SHORT_DSCALE_MAX: i32 = 0x1F80 >> NUMERIC_SHORT_DSCALE_SHIFT;
const NUMERIC_SHORT_WEIGHT_SIGN_MASK: u16 = 0x0040;
const NUMERIC_SHORT_WEIGHT_MASK: u16 = 0x003F;
const NUMERIC_SHORT_WEIGHT_MAX: i32 = NUMERIC_SHORT_WEIGHT_MASK as i32;
const NUMERIC_SHORT_WEIGHT_MIN: i32 = -(NUMERIC_SHORT_WEIGHT_MASK as i32) - 1;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_DSCALE_MASK: u16 = 0x3FFF;

/// Appends the numeric for `text` (`[-]digits[.digits][e[+-]digits]`, as `serde_json`, `ryu`
/// and `itoa` write numbers) with its 4-byte varlena header, as `numeric_in` would make it.
pub(crate) fn write_numeric(text: &str, out: &mut impl Extend<u8>) -> Result<(), Error> {
    let invalid = || Error::new(format!("not a JSON number: {text:?}"));
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => {
            let exponent: i32 = unsigned[at + 1..].parse().map_err(|_| invalid())?;
            (&unsigned[..at], exponent)
        }
        None => (unsigned, 0),
    };
    // numeric_in refuses exponents this large too; the bound keeps the arithmetic in range.
    if exponent.unsigned_abs() > 1_000_000 {
        return Err(Error::new(format!("number out of range: {text}")));
    }
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    // The decimal digits, read in place: no allocation per number.
    let (whole_digits, fraction_digits) = (whole.as_bytes(), fraction.as_bytes());
    let decimal = |i: usize| -> Option<u16> {
        whole_digits
            .get(i)
            .or_else(|| fraction_digits.get(i.checked_sub(whole_digits.len())?))
            .map(|&b| u16::from(b - b'0'))
    };
    let too_large = || Error::new(format!("number out of range: {text}"));
    let whole_len = i32::try_from(whole.len()).map_err(|_| too_large())?;
    let fraction_len = i32::try_from(fraction.len()).map_err(|_| too_large())?;
    // The weight of the first decimal digit, and the digits shown after the point.
    let decimal_weight = (whole_len - 1)
        .checked_add(exponent)
        .ok_or_else(too_large)?;
    let display_scale = fraction_len.saturating_sub(exponent).max(0);

    // Group the decimal digits into base-10000 digits aligned on the decimal point.
    let weight = if decimal_weight >= 0 {
        (decimal_weight + DEC_DIGITS) / DEC_DIGITS - 1
    } else {
        -((-decimal_weight - 1) / DEC_DIGITS + 1)
    };
    let offset = (weight + 1) * DEC_DIGITS - (decimal_weight + 1);
    let decimal_len = whole_len + fraction_len;
    let count = (decimal_len + offset + DEC_DIGITS - 1) / DEC_DIGITS;
    let decimal_at = |i: i32| -> u16 {
        usize::try_from(i - offset)
            .ok()
            .and_then(decimal)
            .unwrap_or(0)
    };
    let digit = |n: i32| -> u16 {
        let first = n * DEC_DIGITS;
        (0..DEC_DIGITS).fold(0u16, |acc, k| acc * 10 + decimal_at(first + k))
    };

    // Strip zero digits at both ends; zero is positive with weight 0.
    let first_nonzero = (0..count).find(|&n| digit(n) != 0);
    let last_nonzero = (0..count).rev().find(|&n| digit(n) != 0);
    let nonzero = first_nonzero.zip(last_nonzero);
    let weight = nonzero.map_or(0, |(first, _)| weight - first);
    let digit_count = nonzero.map_or(0, |(first, last)| (last - first + 1) as usize);
    let negative = negative && digit_count > 0;
    if display_scale > i32::from(NUMERIC_DSCALE_MASK) || !(-0x8000..0x8000).contains(&weight) {
        return Err(too_large());
    }

    let short = display_scale <= NUMERIC_SHORT_DSCALE_MAX
        && (NUMERIC_SHORT_WEIGHT_MIN..=NUMERIC_SHORT_WEIGHT_MAX).contains(&weight);
    let header_len = if short { 4 + 2 } else { 4 + 2 + 2 };
    let len = header_len + 2 * digit_count;
    out.extend(varlena_4b_header(len).to_ne_bytes());
    if short {
        let mut header = NUMERIC_SHORT | ((display_scale as u16) << NUMERIC_SHORT_DSCALE_SHIFT);
        if negative {
            header |= NUMERIC_SHORT_SIGN_MASK;
        }
        if weight < 0 {
            header |= NUMERIC_SHORT_WEIGHT_SIGN_MASK;
        }
        header |= (weight as u16) & NUMERIC_SHORT_WEIGHT_MASK;
        out.extend(header.to_ne_bytes());
    } else {
        let sign = if negative { NUMERIC_NEG } else { 0 };
        out.extend((sign | display_scale as u16).to_ne_bytes());
        out.extend((weight as i16).to_ne_bytes());
    }
    if let Some((first, last)) = nonzero {
        for n in first..=last {
            out.extend(digit(n).to_ne_bytes());
        }
    }
    Ok(())
}

/// `SET_VARSIZE` for a 4-byte varlena header, in the machine's byte order.
pub(crate) fn varlena_4b_header(len: usize) -> u32 {
    let len = len as u32;
    if cfg!(target_endian = "big") {
        len & 0x3FFF_FFFF
    } else {
        len << 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(text: &str) -> Vec<u16> {
        let mut out = Vec::new();
        write_numeric(text, &mut out).unwrap();
        assert_eq!(varlena_4b_header(out.len()).to_ne_bytes(), out[..4]);
        out[4..]
            .chunks(2)
            .map(|pair| u16::from_ne_bytes([pair[0], pair[1]]))
            .collect()
    }

    #[test]
    fn integers_group_into_base_10000_digits() {
        assert_eq!(numeric("0"), vec![NUMERIC_SHORT]);
        assert_eq!(numeric("7"), vec![NUMERIC_SHORT, 7]);
        assert_eq!(numeric("10000"), vec![NUMERIC_SHORT | 1, 1]);
        assert_eq!(numeric("123456789"), vec![NUMERIC_SHORT | 2, 1, 2345, 6789]);
        assert_eq!(
            numeric("18446744073709551615"),
            vec![NUMERIC_SHORT | 4, 1844, 6744, 737, 955, 1615]
        );
    }

    #[test]
    fn fractions_keep_their_display_scale() {
        // 5865.3: weight 0, dscale 1, digits 5865 3000.
        assert_eq!(
            numeric("5865.3"),
            vec![NUMERIC_SHORT | (1 << 7), 5865, 3000]
        );
        // 0.05: weight -1, dscale 2.
        assert_eq!(
            numeric("0.05"),
            vec![
                NUMERIC_SHORT | (2 << 7) | NUMERIC_SHORT_WEIGHT_SIGN_MASK | 0x3F,
                500
            ]
        );
        assert_eq!(numeric("1234.0"), vec![NUMERIC_SHORT | (1 << 7), 1234]);
        assert_eq!(numeric("0.0"), vec![NUMERIC_SHORT | (1 << 7)]);
    }

    #[test]
    fn exponents_shift_weight_and_scale() {
        assert_eq!(numeric("1e-6"), numeric("0.000001"));
        assert_eq!(numeric("1.5e3"), numeric("1500"));
        assert_eq!(numeric("1e16"), numeric("10000000000000000"));
    }

    #[test]
    fn signs_and_negative_zero() {
        assert_eq!(
            numeric("-7"),
            vec![NUMERIC_SHORT | NUMERIC_SHORT_SIGN_MASK, 7]
        );
        assert_eq!(numeric("-0"), numeric("0"));
    }

    #[test]
    fn large_weights_use_the_long_form() {
        let long = numeric("1e300");
        assert_eq!(long[0], 0, "sign and display scale");
        assert_eq!(long[1], 75, "weight");
        assert_eq!(long[2], 1);
    }

    #[test]
    fn text_that_is_not_a_number_is_an_error() {
        for text in ["", "-", ".5", "1.2.3", "1e", "abc", "1e99999999999"] {
            assert!(write_numeric(text, &mut Vec::new()).is_err(), "{text:?}");
        }
    }
}
