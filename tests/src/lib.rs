//! Shared helpers of mimic's integration tests: fixture paths, the `train-native` binary,
//! and tolerance checks.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The reference outputs written by `tests/reference/make_vit_fixtures.py`.
pub fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("vit_reference.json"))
        .expect("tests/fixtures/vit_reference.json should be committed");
    serde_json::from_str(&text).expect("the reference file should be valid JSON")
}

/// A list of numbers from the reference file.
pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

/// Asserts `max |got - want| <= tol * max(max |want|, 1e-3)`: the error relative to the
/// magnitude of the reference vector.
pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    let (i, err) = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold(
            (0, 0f32),
            |best, (i, e)| if e > best.1 { (i, e) } else { best },
        );
    assert!(
        err <= tol * scale,
        "{what}: max error {err:e} at {i} (got {}, want {}) exceeds {tol:e} x {scale}",
        got[i],
        want[i]
    );
}

/// The `train-native` binary built by `cargo test --workspace` next to the test binaries.
pub fn train_native() -> Command {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let bin = dir.join(format!("train-native{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not found: run the tests with `cargo test --workspace` so the binary is built",
        bin.display()
    );
    Command::new(bin)
}

/// Runs `train-native` with `args`; returns whether it succeeded, its stdout and its stderr.
pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = train_native()
        .args(args)
        .output()
        .expect("train-native runs");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("train-native prints utf-8");
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// Every float parameter's gradient in `grads`, named by its module path (empty when the
/// parameter has none), in visiting order.
pub fn named_grads<M: burn::module::Module<Ad>>(
    module: &M,
    grads: &burn::optim::GradientsParams,
) -> Vec<(String, Vec<f32>)> {
    struct Collect<'a> {
        grads: &'a burn::optim::GradientsParams,
        path: Vec<String>,
        out: Vec<(String, Vec<f32>)>,
    }
    impl burn::module::ModuleVisitor<Ad> for Collect<'_> {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<Ad, D>>,
        ) {
            let grad = self.grads.get::<burn::backend::Flex, D>(param.id);
            let values = grad.map_or_else(Vec::new, |g| g.into_data().to_vec().unwrap());
            self.out.push((self.path.join("."), values));
        }
    }
    let mut collect = Collect {
        grads,
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut collect);
    collect.out
}

/// Asserts two [`named_grads`] lists hold the same gradients: every parameter present in
/// both, each entry within 1e-4 of the tensor's largest magnitude (sums taken in another
/// order differ by rounding only).
pub fn assert_same_grads(want: &[(String, Vec<f32>)], got: &[(String, Vec<f32>)], what: &str) {
    let worst = worst_grad_gap(want, got, what);
    assert!(
        worst <= 1e-4,
        "{what}: gradients differ by {worst} of their scale"
    );
}

/// The largest gap between two [`named_grads`] lists, each entry's difference taken relative
/// to its tensor's largest reference magnitude; panics unless both hold the same parameters
/// with gradients of the same shapes.
pub fn worst_grad_gap(want: &[(String, Vec<f32>)], got: &[(String, Vec<f32>)], what: &str) -> f32 {
    assert_eq!(want.len(), got.len(), "{what}: parameter count");
    let mut worst = 0.0f32;
    for ((name, w), (_, g)) in want.iter().zip(got) {
        assert!(!w.is_empty(), "{what}: {name} has no reference gradient");
        assert_eq!(w.len(), g.len(), "{what}: {name} missing or misshapen");
        let scale = w.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let gap = w
            .iter()
            .zip(g)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        worst = worst.max(gap / scale);
    }
    worst
}

/// The autodiff CPU backend the tests train on.
type Ad = burn::backend::Autodiff<burn::backend::Flex>;
