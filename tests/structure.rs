//! The shape of the source tree, held as a test: no source file of the library depends on
//! another that depends back on it (directly or through others), `main.rs` only dispatches, and
//! no file's code outgrows a reader (docs/architecture.md, "The map").
//!
//! A file depends on another when it names an item of the other's module: a `use` of it, or a
//! path through it (`crate::a::b::Item`, `super::Item`, `child::Item`). A name re-exported by a
//! `mod.rs` (`pub use child::Item`) counts as the child's, where the item lives. Unit tests
//! (`#[cfg(test)]` and what follows it) do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The most lines of code (not blank, not comments, not unit tests) a source file may have.
const MAX_CODE_LINES: usize = 700;
/// The most lines `src/main.rs` may have in all: it parses and dispatches.
const MAX_MAIN_LINES: usize = 250;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's text before its unit tests, without comments.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            // `//` inside a string ("http://") is rare in code lines that matter here.
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Lines of code: not blank, not comments, before the unit tests.
fn code_lines(text: &str) -> usize {
    code(text).lines().filter(|l| !l.trim().is_empty()).count()
}

/// The module path of a file under `root` (`src/a/b.rs` and `src/a/b/mod.rs` are `a::b`).
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Every `a::b::c` path in `text` (identifiers joined by `::`), and each path of a `use`
/// statement with its braces expanded.
fn paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (_, tree) in use_trees(text) {
        expand(&mut out, Vec::new(), &tree);
    }
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_alphabetic() || bytes[i] == '_' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_alphanumeric() || bytes[i] == '_' || bytes[i] == ':')
            {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            // A whole path (`a::b::C`), not the head of a `use` tree (`a::b::{`), which the
            // `use` statements give item by item.
            let whole = !word.ends_with(':');
            if whole && word.contains("::") && (start == 0 || !bytes[start - 1].is_alphanumeric()) {
                out.push(
                    word.split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                );
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The trees of the `use` statements in `text`, each without `use` and `;`, and whether it
/// is a re-export (`pub use`, `pub(crate) use`).
fn use_trees(text: &str) -> Vec<(bool, String)> {
    let mut trees = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let (public, after) = match trimmed.strip_prefix("pub") {
            Some(r) if r.starts_with(' ') => (true, r.trim_start()),
            Some(r) if r.starts_with('(') => {
                (true, r[r.find(')').map_or(0, |i| i + 1)..].trim_start())
            }
            _ => (false, trimmed),
        };
        if let Some(tree) = after.strip_prefix("use ") {
            let from = offset + (line.len() - tree.len());
            let end = text[from..].find(';').map_or(text.len(), |i| from + i);
            trees.push((public, text[from..end].trim().to_string()));
        }
        offset += line.len();
    }
    trees
}

/// Adds each path of `use` tree `tree` under `prefix`.
fn expand(out: &mut Vec<Vec<String>>, prefix: Vec<String>, tree: &str) {
    let mut depth = 0;
    let mut part = String::new();
    let mut parts = Vec::new();
    for c in tree.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            parts.push(std::mem::take(&mut part));
        } else {
            part.push(c);
        }
    }
    parts.push(part);
    for part in parts {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        match part.find('{') {
            Some(brace) => {
                let head = part[..brace].trim().trim_end_matches("::");
                let mut next = prefix.clone();
                next.extend(
                    head.split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
                let inner = &part[brace + 1..part.rfind('}').unwrap_or(part.len())];
                expand(out, next, inner);
            }
            None => {
                let name = part.split(" as ").next().unwrap_or(part).trim();
                let mut path = prefix.clone();
                path.extend(
                    name.split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
                out.push(path);
            }
        }
    }
}

struct Tree {
    /// Each file's module path.
    modules: BTreeMap<Vec<String>, PathBuf>,
    /// Names a `mod.rs` re-exports: (module, name) to the module the name comes from.
    reexports: BTreeMap<(Vec<String>, String), Vec<String>>,
}

impl Tree {
    /// The file a path names an item of: the deepest module it goes through, following
    /// re-exports.
    fn resolve(&self, path: &[String]) -> Option<&PathBuf> {
        for len in (0..=path.len()).rev() {
            let module = &path[..len];
            if let Some(file) = self.modules.get(module) {
                if let Some(name) = path.get(len) {
                    if let Some(origin) = self.reexports.get(&(module.to_vec(), name.clone())) {
                        if origin.as_slice() != module {
                            return self.resolve(&[origin.clone(), path[len..].to_vec()].concat());
                        }
                    }
                }
                return Some(file);
            }
        }
        None
    }
}

/// Where `path`, written in module `me`, points: absolute, from the crate root.
fn absolute(
    me: &[String],
    is_mod_file: bool,
    children: &BTreeSet<String>,
    path: &[String],
) -> Option<Vec<String>> {
    let first = path.first()?.as_str();
    let here: Vec<String> = me.to_vec();
    match first {
        "crate" => Some(path[1..].to_vec()),
        "self" => Some([here, path[1..].to_vec()].concat()),
        "super" => {
            let mut base = here;
            let mut rest = path;
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
            let _ = is_mod_file;
            Some([base, rest.to_vec()].concat())
        }
        name if children.contains(name) => Some([here, path.to_vec()].concat()),
        _ => None,
    }
}

fn dependency_graph(root: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut tree = Tree {
        modules: BTreeMap::new(),
        reexports: BTreeMap::new(),
    };
    let texts: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|f| (f.clone(), code(&std::fs::read_to_string(f).unwrap())))
        .collect();
    let children_of = |text: &str| -> BTreeSet<String> {
        text.split(';')
            .filter_map(|s| {
                let s = s.trim();
                let at = s.rfind("mod ")?;
                let name = s[at + 4..].trim();
                (!name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_'))
                    .then(|| name.to_string())
            })
            .collect()
    };
    for (file, text) in &texts {
        let me = module_of(root, file);
        tree.modules.insert(me.clone(), file.clone());
        // `#[path = "x.rs"] mod name;`: the file is this module's child `name`.
        for statement in text.split(';') {
            if let (Some(p), Some(m)) = (statement.find("#[path = \""), statement.rfind("mod ")) {
                let target = &statement[p + 10..];
                let target = &target[..target.find('"').unwrap_or(0)];
                let dir = file.parent().unwrap();
                let path = dir.join(target);
                let name = statement[m + 4..].trim().to_string();
                tree.modules.insert([me.clone(), vec![name]].concat(), path);
            }
        }
    }
    for (file, text) in &texts {
        let me = module_of(root, file);
        let children = children_of(text);
        for (_, used) in use_trees(text).into_iter().filter(|(public, _)| *public) {
            let mut out = Vec::new();
            expand(&mut out, Vec::new(), &used);
            for path in out {
                let Some(abs) = absolute(&me, true, &children, &path) else {
                    continue;
                };
                if let Some((name, module)) = abs.split_last() {
                    tree.reexports
                        .insert((me.clone(), name.clone()), module.to_vec());
                }
            }
        }
    }
    let mut graph = BTreeMap::new();
    for (file, text) in &texts {
        let me = module_of(root, file);
        let children = children_of(text);
        let mut deps = BTreeSet::new();
        for path in paths(text) {
            let Some(abs) = absolute(&me, true, &children, &path) else {
                continue;
            };
            if let Some(target) = tree.resolve(&abs) {
                if target != file && texts.contains_key(target) {
                    deps.insert(target.clone());
                }
            }
        }
        graph.insert(file.clone(), deps);
    }
    graph
}

/// The groups of files that depend on each other (Tarjan's strongly connected components of
/// more than one file).
fn cycles(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct State<'a> {
        graph: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        next: usize,
        found: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a PathBuf) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        for w in &s.graph[v] {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                group.push(w.clone());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.found.push(group);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

fn describe(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>, group: &[PathBuf]) -> String {
    group
        .iter()
        .map(|f| {
            let deps: Vec<String> = graph[f]
                .iter()
                .filter(|d| group.contains(d))
                .map(|d| d.display().to_string())
                .collect();
            format!("  {} -> {}", f.display(), deps.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn crate_root(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

#[test]
fn no_source_file_of_a_library_depends_on_itself_through_others() {
    let mut report = Vec::new();
    for root in ["src", "devices/src", "boot/src"] {
        let graph = dependency_graph(&crate_root(root));
        for group in cycles(&graph) {
            report.push(describe(&graph, &group));
        }
    }
    assert!(
        report.is_empty(),
        "files that depend on each other (break the circle: move what both need into a file \
         of its own):\n{}",
        report.join("\n\n")
    );
}

#[test]
fn no_source_file_has_more_than_700_lines_of_code() {
    let mut files = Vec::new();
    for root in [
        "src",
        "devices/src",
        "boot/src",
        "tests",
        "fuzz/fuzz_targets",
    ] {
        rust_files(&crate_root(root), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .map(|f| (f, code_lines(&std::fs::read_to_string(f).unwrap())))
        .filter(|(_, n)| *n > MAX_CODE_LINES)
        .map(|(f, n)| format!("{} has {n} lines of code", f.display()))
        .collect();
    assert!(
        long.is_empty(),
        "split by concern (at most {MAX_CODE_LINES} lines of code a file):\n{}",
        long.join("\n")
    );
}

#[test]
fn main_only_dispatches() {
    let text = std::fs::read_to_string(crate_root("src/main.rs")).unwrap();
    let lines = text.lines().count();
    assert!(
        lines <= MAX_MAIN_LINES,
        "src/main.rs has {lines} lines: what only the command line uses goes to src/cli/"
    );
}

#[test]
fn test_dependency_graph_follows_uses_paths_and_reexports() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(
        src.join("a/mod.rs"),
        "mod inner;\npub use inner::Thing;\npub struct Error;\n",
    )
    .unwrap();
    std::fs::write(src.join("a/inner.rs"), "pub struct Thing;\n").unwrap();
    std::fs::write(
        src.join("b.rs"),
        "use crate::a::{Thing, Error};\n#[cfg(test)]\nmod tests { use crate::c::X; }\n",
    )
    .unwrap();
    let graph = dependency_graph(src);
    let deps: Vec<_> = graph[&src.join("b.rs")]
        .iter()
        .map(|p| p.strip_prefix(src).unwrap().display().to_string())
        .collect();
    assert_eq!(deps, ["a/inner.rs", "a/mod.rs"]);
    assert!(cycles(&graph).is_empty());
    std::fs::write(src.join("a/inner.rs"), "pub struct Thing(super::Error);\n").unwrap();
    let graph = dependency_graph(src);
    assert_eq!(cycles(&graph).len(), 1);
}
