//! The reference documents say what the code does: every function and error
//! case of the plugin's WIT world is in docs/plugin-world.md.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// `(interface, names)`: each interface's functions and the cases of its
/// variants, as the WIT spells them (`%list` is `list`).
fn wit_names(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut in_variant = false;
    for line in text.lines().map(str::trim) {
        // Gates such as `@since(version = 0.1.1)` mark the item below.
        if line.starts_with("//")
            || line.is_empty()
            || line.starts_with("package ")
            || line.starts_with('@')
        {
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("interface ")
            .or_else(|| line.strip_prefix("world "))
        {
            out.push((rest.trim_end_matches(" {").to_owned(), Vec::new()));
            continue;
        }
        let names = &mut out.last_mut().expect("inside an interface").1;
        if line.starts_with("variant ") {
            in_variant = true;
        } else if in_variant && line == "}" {
            in_variant = false;
        } else if in_variant {
            let case = line.split(['(', ',']).next().unwrap();
            names.push(case.to_owned());
        } else if let Some((name, _)) = line.split_once(": func(") {
            let name = name.trim_start_matches("export ").trim_start_matches('%');
            names.push(name.to_owned());
        }
    }
    out
}

#[test]
fn the_plugin_world_reference_lists_every_function_and_error() {
    let doc = std::fs::read_to_string(root().join("docs/plugin-world.md")).unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("wit")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (interface, names) in wit_names(&text) {
            for name in names {
                assert!(
                    doc.contains(&format!("| `{name}` |")),
                    "docs/plugin-world.md does not list `{name}` of `{interface}` ({})",
                    path.display()
                );
                checked += 1;
            }
        }
    }
    // The six interfaces' functions, the exports and the error cases.
    assert!(
        checked >= 38,
        "only {checked} names found: is the parser broken?"
    );
}

#[test]
fn the_parser_finds_functions_and_error_cases() {
    let wit = "interface x {\n    /// doc\n    variant error {\n        /// a\n        not-found(string),\n        timeout,\n    }\n    %list: func() -> u8;\n    get-all: func();\n}\n";
    assert_eq!(
        wit_names(wit),
        [(
            "x".to_owned(),
            vec![
                "not-found".into(),
                "timeout".into(),
                "list".into(),
                "get-all".into()
            ]
        )]
    );
}
