//! The bench's floor: KernelSeal's hooks with programs that only pass on
//! the verdict they were given (src/bpf/floor.bpf.c). What the bench
//! measures with them attached is what any BPF-LSM program on these hooks
//! costs; the real agent's figure above it is what KernelSeal's code adds.

use aya::programs::Program;
use aya::{Btf, Ebpf, EbpfLoader};

/// The object build.rs compiled from src/bpf/floor.bpf.c.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor.bpf.o"));

/// The floor programs, loaded and attached. Dropping it detaches them: the
/// links belong to the programs, which belong to the `Ebpf`.
pub struct Floor {
    _ebpf: Ebpf,
}

impl Floor {
    /// Loads and attaches every program of the object. Each program is
    /// named after its hook, so the name is what the kernel attaches to.
    pub fn attach(btf: &Btf) -> Result<Self, String> {
        let mut ebpf = EbpfLoader::new()
            .btf(Some(btf))
            .load(OBJECT)
            .map_err(|e| format!("loading the floor object: {}", error_chain(&e)))?;
        let mut attached = 0;
        for (name, program) in ebpf.programs_mut() {
            attach_one(name, program, btf).map_err(|e| format!("floor program {name}: {e}"))?;
            attached += 1;
        }
        // A program the loop skipped would leave its hook out of the floor.
        if attached != HOOKS {
            return Err(format!(
                "the floor attached {attached} programs, expected {HOOKS}"
            ));
        }
        Ok(Floor { _ebpf: ebpf })
    }
}

/// KernelSeal's 19 LSM hooks and its exec tracepoint (the host test below
/// checks floor.bpf.c against the real programs' sections).
const HOOKS: usize = 20;

fn attach_one(name: &str, program: &mut Program, btf: &Btf) -> Result<(), String> {
    let chain = |e: aya::programs::ProgramError| error_chain(&e);
    match program {
        Program::Lsm(lsm) => {
            lsm.load(name, btf).map_err(chain)?;
            lsm.attach().map_err(chain)?;
        }
        Program::BtfTracePoint(tp) => {
            tp.load(name, btf).map_err(chain)?;
            tp.attach().map_err(chain)?;
        }
        other => return Err(format!("unexpected program type {:?}", other.prog_type())),
    }
    Ok(())
}

/// aya wraps the errno and the verifier log in `source()`s; a refusal is
/// only diagnosable with the whole chain.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The `SEC("lsm/…")` and `SEC("tp_btf/…")` sections of C sources.
    fn hook_sections(sources: &[String]) -> BTreeSet<String> {
        sources
            .iter()
            .flat_map(|s| s.split("SEC(\"").skip(1))
            .filter_map(|rest| rest.split_once('"').map(|(sec, _)| sec))
            .filter(|sec| sec.starts_with("lsm/") || sec.starts_with("tp_btf/"))
            .map(str::to_owned)
            .collect()
    }

    fn read_dir_sources(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect()
    }

    /// The floor stands for KernelSeal's programs only if it attaches to the
    /// same hooks: a hook added to (or removed from) the real programs must
    /// be added to (or removed from) floor.bpf.c.
    #[test]
    fn floor_hooks_are_kernelseals_hooks() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let real = hook_sections(&read_dir_sources(&manifest.join("../bpf/src/bpf")));
        let floor = hook_sections(&[
            std::fs::read_to_string(manifest.join("src/bpf/floor.bpf.c")).unwrap(),
        ]);
        assert_eq!(floor, real);
        assert_eq!(floor.len(), super::HOOKS);
    }
}
