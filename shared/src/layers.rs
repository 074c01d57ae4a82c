//! The check behind the layering written at the top of `lib.rs`: every `crate::<module>`
//! a source file names (outside comments) must be in the same layer or below, and the
//! imports between modules must form no cycle.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use crate::LAYERS;

/// Module -> the modules it names, read from the source files under `src/`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = LAYERS.iter().map(|(m, _)| m.to_string()).collect();
    let mut graph = BTreeMap::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            let module = relative.split('/').next().unwrap().trim_end_matches(".rs").to_owned();
            if !relative.ends_with(".rs") || module == "lib" || module == "layers" {
                continue;
            }
            assert!(modules.contains(&module), "module {module} is not in lib.rs's LAYERS: give it a layer");
            let names: &mut BTreeSet<String> = graph.entry(module.clone()).or_default();
            for name in named_modules(&std::fs::read_to_string(&path).unwrap()) {
                if name != module && modules.contains(&name) {
                    names.insert(name);
                }
            }
        }
    }
    graph
}

/// The first path segment after every `crate::`, and every item of `use crate::{...}`,
/// in code (comments removed).
fn named_modules(source: &str) -> Vec<String> {
    let code: String = source.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut names = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::{c, d}, e}`: the first segment of each top-level item.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            names.push(first_segment(&item));
        } else {
            names.push(first_segment(rest));
        }
    }
    names
}

fn first_segment(path: &str) -> String {
    path.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

#[test]
fn imports_go_down_and_never_around_a_circle() {
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let graph = imports();
    let mut upward = Vec::new();
    for (module, names) in &graph {
        for name in names {
            if layer[name.as_str()] > layer[module.as_str()] {
                upward.push(format!("{module} (layer {}) imports {name} (layer {})", layer[module.as_str()], layer[name.as_str()]));
            }
        }
    }
    assert!(upward.is_empty(), "imports going up the layers:\n{}", upward.join("\n"));

    assert_no_circle(&graph);
}

/// The modules of `ops/` (one file each) -> the other ones each names, as `super::x`,
/// `ops::x` or inside `ops::{...}`: ops call each other, so their circles are checked too.
fn ops_imports() -> BTreeMap<String, BTreeSet<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ops");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    let modules: BTreeSet<String> =
        files.iter().map(|p| p.file_stem().unwrap().to_string_lossy().into_owned()).filter(|m| m != "mod").collect();
    let mut graph = BTreeMap::new();
    for path in &files {
        let module = path.file_stem().unwrap().to_string_lossy().into_owned();
        if module == "mod" {
            continue;
        }
        // Read `ops::x` and `super::x` as `crate::x`, so the reader above finds them.
        let source = std::fs::read_to_string(path)
            .unwrap()
            .replace("crate::ops::", "crate::")
            .replace("ops::", "crate::")
            .replace("super::", "crate::");
        let names: BTreeSet<String> = named_modules(&source).into_iter().filter(|n| *n != module && modules.contains(n)).collect();
        graph.insert(module, names);
    }
    graph
}

#[test]
fn operations_call_each_other_without_a_circle() {
    let graph = ops_imports();
    assert!(graph["moves"].contains("move_cleanup") && graph["admission"].contains("place"), "the reader sees ops' imports: {graph:?}");
    assert_no_circle(&graph);
}

/// Panics with the first circle a depth-first search walks into.
fn assert_no_circle(graph: &BTreeMap<String, BTreeSet<String>>) {
    fn visit<'a>(
        module: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<String> {
        if let Some(at) = path.iter().position(|m| *m == module) {
            return Some(format!("{} -> {module}", path[at..].join(" -> ")));
        }
        if done.contains(module) {
            return None;
        }
        path.push(module);
        for next in graph.get(module).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(module);
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(circle) = visit(module, graph, &mut Vec::new(), &mut done) {
            panic!("import circle: {circle}");
        }
    }
}

#[test]
fn the_reader_finds_grouped_and_plain_imports_and_skips_comments() {
    let source = "use crate::{a, b::{c, d}, e::f};\n// crate::commented\nlet x = crate::g::h(); /// crate::doc\n";
    assert_eq!(named_modules(source), ["a", "b", "e", "g"]);
}
