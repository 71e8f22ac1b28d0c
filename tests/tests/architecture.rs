//! The host crates' files form no import circle: in `host/runtime`,
//! `host/store` and `host/daemon`, no file uses another that (directly or
//! through others) uses it back, so every file has a place in one order
//! and data flows one way.
//!
//! A file "uses" a module when it names it by a path: `crate::…`,
//! `super::…`, `self::…` or one of its own child modules (`mod x;` then
//! `x::…`), in a `use` or anywhere in code, including names that a module
//! re-exports (`pub use`), which are followed to where they are defined.
//! Test modules (`#[cfg(test)]`) are left out: a unit test may reach into
//! its parent. Paths inside macro invocations are not parsed; they are rare
//! here, and an import circle made only of them would go unseen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// One crate's modules by path (`""` is the crate root), each with the
/// modules it uses.
type Graph = BTreeMap<String, BTreeSet<String>>;

struct Module {
    file: PathBuf,
    ast: syn::File,
}

/// Reads every `.rs` file under `src` as a module of one crate.
fn modules(src: &Path) -> BTreeMap<String, Module> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                parts.clear();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let ast = syn::parse_file(&text)
                .unwrap_or_else(|e| panic!("{}: does not parse: {e}", path.display()));
            out.insert(parts.join("::"), Module { file: path, ast });
        }
    }
    out
}

/// `#[cfg(test)]`, or `#[cfg(all(test, …))]`.
fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    fn needs_test(m: &syn::Meta) -> bool {
        match m {
            syn::Meta::Path(p) => p.is_ident("test"),
            syn::Meta::List(l) if l.path.is_ident("all") => l
                .parse_args_with(
                    syn::punctuated::Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated,
                )
                .is_ok_and(|all| all.iter().any(needs_test)),
            _ => false,
        }
    }
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && a.parse_args::<syn::Meta>().is_ok_and(|m| needs_test(&m))
    })
}

/// Every path a module's code names, as segments, and its re-exports
/// (`pub use`): exported name → the path it stands for.
#[derive(Default)]
struct Names {
    paths: Vec<Vec<String>>,
    reexports: BTreeMap<String, Vec<String>>,
    /// Inside an inline `mod x { … }`, whose re-exports are not the file's.
    inline: usize,
}

impl Names {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, public: bool) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree, public);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.used(prefix, &n.ident.to_string(), None, public),
            syn::UseTree::Rename(r) => self.used(
                prefix,
                &r.ident.to_string(),
                Some(r.rename.to_string()),
                public,
            ),
            syn::UseTree::Glob(_) => self.paths.push(prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t, public);
                }
            }
        }
    }

    fn used(&mut self, prefix: &[String], name: &str, alias: Option<String>, public: bool) {
        let mut path = prefix.to_vec();
        if name != "self" {
            path.push(name.to_owned());
        }
        if public && self.inline == 0 {
            let exported = alias.unwrap_or_else(|| path.last().cloned().unwrap_or_default());
            self.reexports.insert(exported, path.clone());
        }
        self.paths.push(path);
    }
}

impl<'ast> Visit<'ast> for Names {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_cfg_test(&m.attrs) {
            self.inline += 1;
            syn::visit::visit_item_mod(self, m);
            self.inline -= 1;
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !is_cfg_test(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if is_cfg_test(&u.attrs) {
            return;
        }
        let public = !matches!(u.vis, syn::Visibility::Inherited);
        self.use_tree(&mut Vec::new(), &u.tree, public);
    }

    // `pub(super)` and `pub(in crate::x)` are visibility, not use.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_path(&mut self, p: &'ast syn::Path) {
        self.paths
            .push(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }
}

fn join(parts: &[String]) -> String {
    parts.join("::")
}

/// The module `path`, named in module `from`, refers to: the longest
/// prefix that is a module, following re-exports. `None` for paths that
/// leave the crate or stay inside `from`'s own items.
fn resolve(
    crate_mods: &BTreeMap<String, Names>,
    from: &str,
    path: &[String],
    depth: usize,
) -> Option<String> {
    let here: Vec<String> = if from.is_empty() {
        Vec::new()
    } else {
        from.split("::").map(str::to_owned).collect()
    };
    let first = path.first()?;
    let (mut base, mut rest) = match first.as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (here.clone(), &path[1..]),
        "super" => (here[..here.len().saturating_sub(1)].to_vec(), &path[1..]),
        child => {
            let mut c = here.clone();
            c.push(child.to_owned());
            if !crate_mods.contains_key(&join(&c)) {
                return None;
            }
            (here.clone(), path)
        }
    };
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    let mut full = base;
    full.extend_from_slice(rest);
    for len in (0..=full.len()).rev() {
        let module = join(&full[..len]);
        let Some(names) = crate_mods.get(&module) else {
            continue;
        };
        if let Some(target) = full.get(len).and_then(|n| names.reexports.get(n))
            && depth < 8
        {
            let mut target = target.clone();
            if !matches!(target[0].as_str(), "crate" | "self" | "super") {
                target.insert(0, "self".to_owned());
            }
            if let Some(m) = resolve(crate_mods, &module, &target, depth + 1) {
                return Some(m);
            }
        }
        return Some(module);
    }
    None
}

fn graph(src: &Path) -> (Graph, BTreeMap<String, PathBuf>) {
    let mods = modules(src);
    let names: BTreeMap<String, Names> = mods
        .iter()
        .map(|(k, m)| {
            let mut n = Names::default();
            n.visit_file(&m.ast);
            (k.clone(), n)
        })
        .collect();
    let mut g = Graph::new();
    for (module, n) in &names {
        let uses = g.entry(module.clone()).or_default();
        for p in &n.paths {
            if let Some(target) = resolve(&names, module, p, 0)
                && target != *module
            {
                uses.insert(target);
            }
        }
    }
    let files = mods.into_iter().map(|(k, m)| (k, m.file)).collect();
    (g, files)
}

/// The graph's strongly connected components of more than one module
/// (Tarjan): each is an import circle.
fn circles(g: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on_stack.remove(w);
                    comp.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

/// Every circle in the crate at `src`, described file by file.
fn circles_in(src: &Path) -> Vec<String> {
    let (g, files) = graph(src);
    circles(&g)
        .into_iter()
        .map(|comp| {
            let mut s = String::from("import circle:");
            for m in &comp {
                let uses: Vec<&str> = g[m]
                    .iter()
                    .filter(|t| comp.contains(t))
                    .map(|t| files[t].file_name().unwrap().to_str().unwrap())
                    .collect();
                s.push_str(&format!("\n  {} uses {uses:?}", files[m].display()));
            }
            s
        })
        .collect()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn no_host_crate_has_an_import_circle() {
    let mut found = Vec::new();
    for krate in ["runtime", "store", "daemon"] {
        let src = workspace().join("host").join(krate).join("src");
        let (g, _) = graph(&src);
        // The analysis saw the crate: every crate here has a dozen modules
        // or more, and its modules use each other.
        assert!(g.len() >= 6, "{}: only {} modules", src.display(), g.len());
        assert!(g.values().map(BTreeSet::len).sum::<usize>() >= g.len());
        found.extend(circles_in(&src));
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The check finds circles of each kind it claims to: through `crate::`,
/// through a parent's child module and `super::`, and through a
/// re-export; and it does not count a `#[cfg(test)]` module or a
/// visibility.
#[test]
fn the_circle_check_finds_each_kind_of_circle() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "lib.rs",
        "mod a; mod b; mod c; mod d; mod f; mod h; mod i; pub mod cli; pub use d::Thing;\n\
         pub mod prelude { pub use crate::Thing; }",
    );
    write("a.rs", "use crate::b::f; pub fn g() { f() }");
    write("b.rs", "pub fn f() { crate::a::g() }");
    write("cli/mod.rs", "mod run; pub fn main() { run::go() }");
    write("cli/run.rs", "pub fn go() { super::helper() }");
    write("c.rs", "pub fn h(_: crate::Thing) {}");
    write("d.rs", "pub struct Thing; fn k() { crate::c::h(Thing) }");
    // Not circles: a child that is only `pub(super)`, and a use from a
    // test module.
    write("f/mod.rs", "mod g; pub fn x() { g::y() }");
    write("f/g.rs", "pub(super) fn y() {}");
    write(
        "h.rs",
        "pub fn h() {} #[cfg(test)] mod tests { fn t() { crate::i::i() } }\n\
         #[cfg(all(test, unix))] mod more { fn t() { crate::i::i() } }",
    );
    write("i.rs", "pub fn i() { crate::h::h() }");
    let got = circles(&graph(dir.path()).0);
    assert_eq!(
        got,
        vec![
            vec!["a".to_owned(), "b".to_owned()],
            vec!["c".to_owned(), "d".to_owned()],
            vec!["cli".to_owned(), "cli::run".to_owned()],
        ],
        "{got:?}"
    );
}
