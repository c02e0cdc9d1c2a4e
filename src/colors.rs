//! Colour name → `#RRGGBB` lookup that fills the contract's `color_hex` from the colour tag
//! Ximilar returns; `None` here (unknown name, pattern, "multicolor") becomes `""` upstream.

/// Fashion colour names that are not CSS names. Keys are already normalised (lower-case, no
/// spaces, hyphens or underscores). Values are common reference swatches (mostly the usual
/// Wikipedia/"colour name" values); names with no single standard (stone, nude, taupe, mauve,
/// blush …) use one widely quoted value. Sorted by name for binary search; no key is a CSS name.
static FASHION: &[(&str, &str)] = &[
    ("anthracite", "#293133"), // RAL 7016 anthracite grey
    ("apricot", "#FBCEB1"),
    ("armygreen", "#4B5320"),
    ("ashgray", "#B2BEB5"),
    ("ashgrey", "#B2BEB5"),
    ("aubergine", "#614051"), // = eggplant
    ("babyblue", "#89CFF0"),
    ("babypink", "#F4C2C2"),
    ("blush", "#DE5D83"),
    ("bottlegreen", "#006A4E"),
    ("brickred", "#CB4154"),
    ("bronze", "#CD7F32"),
    ("burgundy", "#800020"),
    ("camel", "#C19A6B"),
    ("champagne", "#F7E7CE"),
    ("charcoal", "#36454F"),
    ("charcoalgray", "#36454F"),
    ("charcoalgrey", "#36454F"),
    ("cobalt", "#0047AB"),
    ("cobaltblue", "#0047AB"),
    ("coffee", "#6F4E37"),
    ("copper", "#B87333"),
    ("cream", "#FFFDD0"),
    ("darkbrown", "#654321"),
    ("darkpink", "#E75480"),
    ("darkpurple", "#301934"),
    ("denim", "#1560BD"),
    ("ecru", "#C2B280"),
    ("eggplant", "#614051"),
    ("electricblue", "#7DF9FF"),
    ("emerald", "#50C878"),
    ("emeraldgreen", "#50C878"),
    ("jade", "#00A86B"),
    ("kellygreen", "#4CBB17"),
    ("lemon", "#FFF700"),
    ("lightbrown", "#B5651D"),
    ("lilac", "#C8A2C8"),
    ("marsala", "#964F4C"), // Pantone 18-1438
    ("mauve", "#E0B0FF"),
    ("mint", "#98FF98"), // = mint green
    ("mintgreen", "#98FF98"),
    ("mustard", "#FFDB58"),
    ("mustardyellow", "#FFDB58"),
    ("navyblue", "#000080"), // = CSS navy
    ("neongreen", "#39FF14"),
    ("nude", "#E3BC9A"),
    ("ochre", "#CC7722"),
    ("offwhite", "#FAF9F6"),
    ("olivegreen", "#808000"), // = CSS olive
    ("oxblood", "#4A0000"),
    ("peach", "#FFE5B4"),
    ("periwinkle", "#CCCCFF"),
    ("petrol", "#005F6A"),
    ("pinegreen", "#01796F"),
    ("raspberry", "#E30B5C"),
    ("rose", "#FF007F"),
    ("rosegold", "#B76E79"),
    ("rust", "#B7410E"),
    ("sage", "#BCB88A"),
    ("sagegreen", "#BCB88A"),
    ("sand", "#C2B280"),
    ("scarlet", "#FF2400"),
    ("stone", "#ADA587"),
    ("tangerine", "#F28500"),
    ("taupe", "#483C32"),
    ("terracotta", "#E2725B"),
    ("wine", "#722F37"),
    ("winered", "#722F37"),
];

/// Longest key in either table is 20 bytes ("lightgoldenrodyellow"); anything much longer cannot
/// match, so it is rejected before allocating.
const MAX_INPUT_LEN: usize = 64;

/// `#RRGGBB` (upper-case hex) for a colour name: one of CSS Color Module Level 4's 148 named
/// colours (from `csscolorparser`), or a fashion name of the table above; None otherwise.
///
/// The name is trimmed, lower-cased, and spaces, hyphens and underscores are dropped first, so
/// "Light Blue", "light-blue" and "light_blue" all look up "lightblue".
pub fn hex_for(name: &str) -> Option<String> {
    if name.len() > MAX_INPUT_LEN {
        return None;
    }
    let key = normalise(name);
    if key.is_empty() {
        return None;
    }
    match css(&key) {
        Some([r, g, b]) => Some(format!("#{r:02X}{g:02X}{b:02X}")),
        None => lookup(FASHION, &key).map(str::to_string),
    }
}

/// A CSS named colour's value (`key` is normalised: lower-case). 148 entries: a scan is cheap.
fn css(key: &str) -> Option<[u8; 3]> {
    csscolorparser::NAMED_COLORS.entries().find(|(name, _)| name.as_str() == key).map(|(_, rgb)| *rgb)
}

fn normalise(name: &str) -> String {
    name.trim()
        .chars()
        .filter(|c| !(c.is_whitespace() || *c == '-' || *c == '_'))
        .flat_map(char::to_lowercase)
        .collect()
}

fn lookup(table: &'static [(&'static str, &'static str)], key: &str) -> Option<&'static str> {
    table.binary_search_by(|(k, _)| (*k).cmp(key)).ok().map(|i| table[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_values(cases: &[(&str, &str)]) {
        for (name, hex) in cases {
            assert_eq!(hex_for(name).as_deref(), Some(*hex), "{name:?}");
        }
    }

    #[test]
    fn exact_css_values() {
        let cases = [
            ("khaki", "#F0E68C"),
            ("navy", "#000080"),
            ("beige", "#F5F5DC"),
            ("rebeccapurple", "#663399"),
            ("blue", "#0000FF"),
            ("lightblue", "#ADD8E6"),
            ("darkblue", "#00008B"),
            ("lightpink", "#FFB6C1"),
            ("lightgrey", "#D3D3D3"),
            ("darkgrey", "#A9A9A9"),
        ];
        assert_values(&cases);
        assert_eq!(hex_for("grey"), hex_for("gray"));
        assert_eq!(hex_for("darkslategrey"), hex_for("darkslategray"));
    }

    #[test]
    fn normalisation() {
        for s in ["light blue", "Light Blue", "light-blue", "light_blue", "LIGHTBLUE", "  light  blue \t"] {
            assert_eq!(hex_for(s).as_deref(), Some("#ADD8E6"), "{s:?}");
        }
        assert_eq!(hex_for("Dark Grey").as_deref(), Some("#A9A9A9"));
        assert_eq!(hex_for("light grey").as_deref(), Some("#D3D3D3"));
        assert_eq!(hex_for("Rebecca Purple").as_deref(), Some("#663399"));
        for s in ["off white", "off-white", "offwhite", "Off-White", "OFF_WHITE"] {
            assert_eq!(hex_for(s).as_deref(), Some("#FAF9F6"), "{s:?}");
        }
        assert_eq!(hex_for("Navy Blue"), hex_for("navy"));
        assert_eq!(hex_for("wine red"), hex_for("wine"));
    }

    #[test]
    fn fashion_names() {
        let cases = [
            ("navy blue", "#000080"),
            ("cream", "#FFFDD0"),
            ("camel", "#C19A6B"),
            ("burgundy", "#800020"),
            ("wine", "#722F37"),
            ("Wine Red", "#722F37"),
            ("mustard", "#FFDB58"),
            ("olive green", "#808000"),
            ("mint", "#98FF98"),
            ("charcoal", "#36454F"),
            ("nude", "#E3BC9A"),
            ("taupe", "#483C32"),
            ("rust", "#B7410E"),
            ("denim", "#1560BD"),
            ("ecru", "#C2B280"),
            ("champagne", "#F7E7CE"),
            ("mauve", "#E0B0FF"),
            ("sand", "#C2B280"),
            ("stone", "#ADA587"),
            ("petrol", "#005F6A"),
            ("emerald", "#50C878"),
            ("ochre", "#CC7722"),
            ("blush", "#DE5D83"),
            ("rose", "#FF007F"),
            ("rose gold", "#B76E79"),
        ];
        assert_values(&cases);
    }

    #[test]
    fn unknown_is_none() {
        for s in [
            "",
            "   ",
            "-",
            "_ -",
            "multicolor",
            "multicolour",
            "Multi-Color",
            "multi",
            "print",
            "transparent",
            "floral",
            "striped",
            "bluish",
            "notacolour",
            "#0000FF",
            "currentcolor",
        ] {
            assert_eq!(hex_for(s), None, "{s:?}");
        }
        assert_eq!(hex_for(&"blue".repeat(100)), None);
    }

    fn check_table(table: &[(&str, &str)]) {
        for w in table.windows(2) {
            assert!(w[0].0 < w[1].0, "not strictly sorted: {:?} then {:?}", w[0].0, w[1].0);
        }
        for (name, _) in table {
            assert!(!name.is_empty());
            assert_eq!(normalise(name), *name, "key not normalised: {name:?}");
            assert!(name.len() <= MAX_INPUT_LEN);
        }
    }

    #[test]
    fn the_fashion_table_is_sorted_unique_normalised_and_no_css_name() {
        check_table(FASHION);
        for (name, _) in FASHION {
            assert_eq!(css(name), None, "{name:?} is a CSS name");
        }
    }

    #[test]
    fn every_css_named_colour_and_fashion_name_gives_upper_hex() {
        assert_eq!(csscolorparser::NAMED_COLORS.len(), 148, "CSS Color 4 names 148 colours");
        let css = csscolorparser::NAMED_COLORS.keys().map(|k| k.as_str());
        for name in css.chain(FASHION.iter().map(|(name, _)| *name)) {
            let hex = hex_for(name).unwrap_or_else(|| panic!("{name:?} has no value"));
            let b = hex.as_bytes();
            let ok =
                b.len() == 7 && b[0] == b'#' && b[1..].iter().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c));
            assert!(ok, "{name:?} has bad value {hex:?}");
        }
        for (name, hex) in FASHION {
            assert_eq!(hex_for(name).as_deref(), Some(*hex), "{name:?}");
        }
    }
}
