//! Colour name → `#RRGGBB` lookup that fills the contract's `color_hex` from the colour tag
//! Ximilar returns; `None` here (unknown name, pattern, "multicolor") becomes `""` upstream.

/// CSS Color Module Level 4 named colours (all 148, both grey/gray spellings), exact values.
/// Sorted by name for binary search.
static CSS: &[(&str, &str)] = &[
    ("aliceblue", "#F0F8FF"),
    ("antiquewhite", "#FAEBD7"),
    ("aqua", "#00FFFF"),
    ("aquamarine", "#7FFFD4"),
    ("azure", "#F0FFFF"),
    ("beige", "#F5F5DC"),
    ("bisque", "#FFE4C4"),
    ("black", "#000000"),
    ("blanchedalmond", "#FFEBCD"),
    ("blue", "#0000FF"),
    ("blueviolet", "#8A2BE2"),
    ("brown", "#A52A2A"),
    ("burlywood", "#DEB887"),
    ("cadetblue", "#5F9EA0"),
    ("chartreuse", "#7FFF00"),
    ("chocolate", "#D2691E"),
    ("coral", "#FF7F50"),
    ("cornflowerblue", "#6495ED"),
    ("cornsilk", "#FFF8DC"),
    ("crimson", "#DC143C"),
    ("cyan", "#00FFFF"),
    ("darkblue", "#00008B"),
    ("darkcyan", "#008B8B"),
    ("darkgoldenrod", "#B8860B"),
    ("darkgray", "#A9A9A9"),
    ("darkgreen", "#006400"),
    ("darkgrey", "#A9A9A9"),
    ("darkkhaki", "#BDB76B"),
    ("darkmagenta", "#8B008B"),
    ("darkolivegreen", "#556B2F"),
    ("darkorange", "#FF8C00"),
    ("darkorchid", "#9932CC"),
    ("darkred", "#8B0000"),
    ("darksalmon", "#E9967A"),
    ("darkseagreen", "#8FBC8F"),
    ("darkslateblue", "#483D8B"),
    ("darkslategray", "#2F4F4F"),
    ("darkslategrey", "#2F4F4F"),
    ("darkturquoise", "#00CED1"),
    ("darkviolet", "#9400D3"),
    ("deeppink", "#FF1493"),
    ("deepskyblue", "#00BFFF"),
    ("dimgray", "#696969"),
    ("dimgrey", "#696969"),
    ("dodgerblue", "#1E90FF"),
    ("firebrick", "#B22222"),
    ("floralwhite", "#FFFAF0"),
    ("forestgreen", "#228B22"),
    ("fuchsia", "#FF00FF"),
    ("gainsboro", "#DCDCDC"),
    ("ghostwhite", "#F8F8FF"),
    ("gold", "#FFD700"),
    ("goldenrod", "#DAA520"),
    ("gray", "#808080"),
    ("green", "#008000"),
    ("greenyellow", "#ADFF2F"),
    ("grey", "#808080"),
    ("honeydew", "#F0FFF0"),
    ("hotpink", "#FF69B4"),
    ("indianred", "#CD5C5C"),
    ("indigo", "#4B0082"),
    ("ivory", "#FFFFF0"),
    ("khaki", "#F0E68C"),
    ("lavender", "#E6E6FA"),
    ("lavenderblush", "#FFF0F5"),
    ("lawngreen", "#7CFC00"),
    ("lemonchiffon", "#FFFACD"),
    ("lightblue", "#ADD8E6"),
    ("lightcoral", "#F08080"),
    ("lightcyan", "#E0FFFF"),
    ("lightgoldenrodyellow", "#FAFAD2"),
    ("lightgray", "#D3D3D3"),
    ("lightgreen", "#90EE90"),
    ("lightgrey", "#D3D3D3"),
    ("lightpink", "#FFB6C1"),
    ("lightsalmon", "#FFA07A"),
    ("lightseagreen", "#20B2AA"),
    ("lightskyblue", "#87CEFA"),
    ("lightslategray", "#778899"),
    ("lightslategrey", "#778899"),
    ("lightsteelblue", "#B0C4DE"),
    ("lightyellow", "#FFFFE0"),
    ("lime", "#00FF00"),
    ("limegreen", "#32CD32"),
    ("linen", "#FAF0E6"),
    ("magenta", "#FF00FF"),
    ("maroon", "#800000"),
    ("mediumaquamarine", "#66CDAA"),
    ("mediumblue", "#0000CD"),
    ("mediumorchid", "#BA55D3"),
    ("mediumpurple", "#9370DB"),
    ("mediumseagreen", "#3CB371"),
    ("mediumslateblue", "#7B68EE"),
    ("mediumspringgreen", "#00FA9A"),
    ("mediumturquoise", "#48D1CC"),
    ("mediumvioletred", "#C71585"),
    ("midnightblue", "#191970"),
    ("mintcream", "#F5FFFA"),
    ("mistyrose", "#FFE4E1"),
    ("moccasin", "#FFE4B5"),
    ("navajowhite", "#FFDEAD"),
    ("navy", "#000080"),
    ("oldlace", "#FDF5E6"),
    ("olive", "#808000"),
    ("olivedrab", "#6B8E23"),
    ("orange", "#FFA500"),
    ("orangered", "#FF4500"),
    ("orchid", "#DA70D6"),
    ("palegoldenrod", "#EEE8AA"),
    ("palegreen", "#98FB98"),
    ("paleturquoise", "#AFEEEE"),
    ("palevioletred", "#DB7093"),
    ("papayawhip", "#FFEFD5"),
    ("peachpuff", "#FFDAB9"),
    ("peru", "#CD853F"),
    ("pink", "#FFC0CB"),
    ("plum", "#DDA0DD"),
    ("powderblue", "#B0E0E6"),
    ("purple", "#800080"),
    ("rebeccapurple", "#663399"),
    ("red", "#FF0000"),
    ("rosybrown", "#BC8F8F"),
    ("royalblue", "#4169E1"),
    ("saddlebrown", "#8B4513"),
    ("salmon", "#FA8072"),
    ("sandybrown", "#F4A460"),
    ("seagreen", "#2E8B57"),
    ("seashell", "#FFF5EE"),
    ("sienna", "#A0522D"),
    ("silver", "#C0C0C0"),
    ("skyblue", "#87CEEB"),
    ("slateblue", "#6A5ACD"),
    ("slategray", "#708090"),
    ("slategrey", "#708090"),
    ("snow", "#FFFAFA"),
    ("springgreen", "#00FF7F"),
    ("steelblue", "#4682B4"),
    ("tan", "#D2B48C"),
    ("teal", "#008080"),
    ("thistle", "#D8BFD8"),
    ("tomato", "#FF6347"),
    ("turquoise", "#40E0D0"),
    ("violet", "#EE82EE"),
    ("wheat", "#F5DEB3"),
    ("white", "#FFFFFF"),
    ("whitesmoke", "#F5F5F5"),
    ("yellow", "#FFFF00"),
    ("yellowgreen", "#9ACD32"),
];

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

/// `#RRGGBB` (upper-case hex) for a colour name, or None when the name is not in the table.
///
/// The name is trimmed, lower-cased, and spaces, hyphens and underscores are dropped first, so
/// "Light Blue", "light-blue" and "light_blue" all look up "lightblue".
pub fn hex_for(name: &str) -> Option<&'static str> {
    if name.len() > MAX_INPUT_LEN {
        return None;
    }
    let key = normalise(name);
    if key.is_empty() {
        return None;
    }
    lookup(CSS, &key).or_else(|| lookup(FASHION, &key))
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

    /// Every CSS Color Module Level 4 named colour.
    const CSS_NAMES: [&str; 148] = [
        "aliceblue",
        "antiquewhite",
        "aqua",
        "aquamarine",
        "azure",
        "beige",
        "bisque",
        "black",
        "blanchedalmond",
        "blue",
        "blueviolet",
        "brown",
        "burlywood",
        "cadetblue",
        "chartreuse",
        "chocolate",
        "coral",
        "cornflowerblue",
        "cornsilk",
        "crimson",
        "cyan",
        "darkblue",
        "darkcyan",
        "darkgoldenrod",
        "darkgray",
        "darkgreen",
        "darkgrey",
        "darkkhaki",
        "darkmagenta",
        "darkolivegreen",
        "darkorange",
        "darkorchid",
        "darkred",
        "darksalmon",
        "darkseagreen",
        "darkslateblue",
        "darkslategray",
        "darkslategrey",
        "darkturquoise",
        "darkviolet",
        "deeppink",
        "deepskyblue",
        "dimgray",
        "dimgrey",
        "dodgerblue",
        "firebrick",
        "floralwhite",
        "forestgreen",
        "fuchsia",
        "gainsboro",
        "ghostwhite",
        "gold",
        "goldenrod",
        "gray",
        "green",
        "greenyellow",
        "grey",
        "honeydew",
        "hotpink",
        "indianred",
        "indigo",
        "ivory",
        "khaki",
        "lavender",
        "lavenderblush",
        "lawngreen",
        "lemonchiffon",
        "lightblue",
        "lightcoral",
        "lightcyan",
        "lightgoldenrodyellow",
        "lightgray",
        "lightgreen",
        "lightgrey",
        "lightpink",
        "lightsalmon",
        "lightseagreen",
        "lightskyblue",
        "lightslategray",
        "lightslategrey",
        "lightsteelblue",
        "lightyellow",
        "lime",
        "limegreen",
        "linen",
        "magenta",
        "maroon",
        "mediumaquamarine",
        "mediumblue",
        "mediumorchid",
        "mediumpurple",
        "mediumseagreen",
        "mediumslateblue",
        "mediumspringgreen",
        "mediumturquoise",
        "mediumvioletred",
        "midnightblue",
        "mintcream",
        "mistyrose",
        "moccasin",
        "navajowhite",
        "navy",
        "oldlace",
        "olive",
        "olivedrab",
        "orange",
        "orangered",
        "orchid",
        "palegoldenrod",
        "palegreen",
        "paleturquoise",
        "palevioletred",
        "papayawhip",
        "peachpuff",
        "peru",
        "pink",
        "plum",
        "powderblue",
        "purple",
        "rebeccapurple",
        "red",
        "rosybrown",
        "royalblue",
        "saddlebrown",
        "salmon",
        "sandybrown",
        "seagreen",
        "seashell",
        "sienna",
        "silver",
        "skyblue",
        "slateblue",
        "slategray",
        "slategrey",
        "snow",
        "springgreen",
        "steelblue",
        "tan",
        "teal",
        "thistle",
        "tomato",
        "turquoise",
        "violet",
        "wheat",
        "white",
        "whitesmoke",
        "yellow",
        "yellowgreen",
    ];

    #[test]
    fn exact_css_values() {
        assert_eq!(hex_for("khaki"), Some("#F0E68C"));
        assert_eq!(hex_for("navy"), Some("#000080"));
        assert_eq!(hex_for("beige"), Some("#F5F5DC"));
        assert_eq!(hex_for("rebeccapurple"), Some("#663399"));
        assert_eq!(hex_for("blue"), Some("#0000FF"));
        assert_eq!(hex_for("lightblue"), Some("#ADD8E6"));
        assert_eq!(hex_for("darkblue"), Some("#00008B"));
        assert_eq!(hex_for("lightpink"), Some("#FFB6C1"));
        assert_eq!(hex_for("grey"), hex_for("gray"));
        assert_eq!(hex_for("lightgrey"), Some("#D3D3D3"));
        assert_eq!(hex_for("darkgrey"), Some("#A9A9A9"));
        assert_eq!(hex_for("darkslategrey"), hex_for("darkslategray"));
    }

    #[test]
    fn normalisation() {
        for s in ["light blue", "Light Blue", "light-blue", "light_blue", "LIGHTBLUE", "  light  blue \t"] {
            assert_eq!(hex_for(s), Some("#ADD8E6"), "{s:?}");
        }
        assert_eq!(hex_for("Dark Grey"), Some("#A9A9A9"));
        assert_eq!(hex_for("light grey"), Some("#D3D3D3"));
        assert_eq!(hex_for("Rebecca Purple"), Some("#663399"));
        for s in ["off white", "off-white", "offwhite", "Off-White", "OFF_WHITE"] {
            assert_eq!(hex_for(s), Some("#FAF9F6"), "{s:?}");
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
        for (name, hex) in cases {
            assert_eq!(hex_for(name), Some(hex), "{name:?}");
        }
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
    fn tables_sorted_unique_and_normalised() {
        check_table(CSS);
        check_table(FASHION);
        for (name, _) in FASHION {
            assert!(CSS.binary_search_by(|(k, _)| k.cmp(name)).is_err(), "{name:?} is a CSS name");
        }
    }

    #[test]
    fn values_are_upper_hex() {
        for (name, hex) in CSS.iter().chain(FASHION) {
            let b = hex.as_bytes();
            let ok =
                b.len() == 7 && b[0] == b'#' && b[1..].iter().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c));
            assert!(ok, "{name:?} has bad value {hex:?}");
        }
    }

    #[test]
    fn every_css_name_present() {
        assert_eq!(CSS.len(), CSS_NAMES.len());
        for name in CSS_NAMES {
            assert!(CSS.binary_search_by(|(k, _)| (*k).cmp(name)).is_ok(), "missing CSS name {name:?}");
            assert!(hex_for(name).is_some());
        }
    }

    #[test]
    fn every_value_reachable_through_hex_for() {
        for (name, hex) in CSS.iter().chain(FASHION) {
            assert_eq!(hex_for(name), Some(*hex), "{name:?}");
        }
    }
}
