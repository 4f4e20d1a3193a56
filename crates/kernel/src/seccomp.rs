//! A seccomp policy compiled to one classic BPF program that finds a system call's verdict by
//! binary search over ranges of system call numbers.
//!
//! Why not seccompiler's program: it tests the allowed calls one after another (1,587
//! instructions for Docker's default profile), and every container start paid for it twice
//! at `prctl(PR_SET_SECCOMP)` — the kernel converts the program to eBPF and JITs it
//! (`bpf_prepare_filter`), then runs it for every system call number to fill its
//! allow-cache (`seccomp_cache_prepare`): ~1.2 ms per start, 0.56–0.9 ms of a `run --rm` on
//! this project's machines (`bench/cli/opts_ab.sh`, docs/PERFORMANCE.md). Its second
//! filter (`clone3` → `ENOSYS`, one filter could not carry two errnos) was a second
//! compilation. Here: one program (150 instructions for that profile), decided in ~10
//! comparisons, with per-call actions (`ENOSYS` for `clone3`, `EPERM` elsewhere).
//!
//! The program:
//! ```text
//!   ld  [4]                       ; seccomp_data.arch
//!   jeq #AUDIT_ARCH, 1, 0
//!   ret #KILL_PROCESS             ; a foreign architecture's call (32-bit x86 on x86_64)
//!   ld  [0]                       ; seccomp_data.nr
//!   jge #K, right, left …         ; the search tree; each leaf a `ret` or an argument test
//! ```
//! Argument tests compare the argument's low 32 bits (`ld [16 + 8·i]` on a little-endian
//! machine), as seccompiler's `Dword` conditions did and as the kernel reads an `int`.

use std::collections::BTreeMap;

/// One classic BPF instruction (`struct sock_filter`).
pub type Insn = libc::sock_filter;

/// What the filter answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run the call.
    Allow,
    /// Fail it with this errno.
    Errno(u16),
    /// Kill the whole process.
    KillProcess,
}

impl Action {
    /// The `SECCOMP_RET_*` value.
    pub fn ret(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Errno(e) => libc::SECCOMP_RET_ERRNO | u32::from(e),
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        }
    }
}

/// A test of a system call argument's low 32 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `arg == v`
    Eq(u32),
    /// `arg < v`
    Lt(u32),
    /// `arg > v`
    Gt(u32),
    /// `arg & mask == 0`
    NoBitOf(u32),
}

/// A system call's rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The same answer whatever the arguments.
    Always(Action),
    /// `then` if any of `tests` holds for argument `arg`, else `otherwise`.
    Arg {
        /// Index of the argument (0–5).
        arg: u8,
        /// Tests, any of which is enough.
        tests: Vec<Cmp>,
        /// The answer when one holds.
        then: Action,
        /// The answer when none does.
        otherwise: Action,
    },
}

/// Why a policy cannot be compiled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SeccompError {
    /// An argument index past the six a system call has.
    #[error("seccomp rule of system call {nr}: argument {arg} (a call has 0-5)")]
    BadArg {
        /// The call.
        nr: u32,
        /// The index given.
        arg: u8,
    },
    /// More instructions than the kernel takes.
    #[error("seccomp program of {0} instructions (the kernel takes at most 4096)")]
    TooLong(usize),
    /// An argument rule with more tests than a short jump spans.
    #[error("seccomp rule of system call {0}: too many tests")]
    TooManyTests(u32),
}

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// `BPF_MAXINSNS`.
const MAX_INSNS: usize = 4096;

/// `offsetof(struct seccomp_data, nr)`.
const NR: u32 = 0;
/// `offsetof(struct seccomp_data, arch)`.
const ARCH: u32 = 4;
/// `offsetof(struct seccomp_data, args)`; each argument is a `u64`.
const ARGS: u32 = 16;

/// The `AUDIT_ARCH_*` value of the machine berth is built for (what `seccomp_data.arch`
/// holds for a native system call).
#[cfg(target_arch = "x86_64")]
pub const NATIVE_ARCH: u32 = 0xC000_003E;
/// The `AUDIT_ARCH_*` value of the machine berth is built for (what `seccomp_data.arch`
/// holds for a native system call).
#[cfg(target_arch = "aarch64")]
pub const NATIVE_ARCH: u32 = 0xC000_00B7;

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// The offset of argument `arg`'s low 32 bits in `seccomp_data`.
fn arg_low(arg: u8) -> u32 {
    let base = ARGS + 8 * u32::from(arg);
    if cfg!(target_endian = "little") {
        base
    } else {
        base + 4
    }
}

/// Compiles `rules` (system call number → rule; every other number gets `default`) for
/// `arch` (`AUDIT_ARCH_*`; a call of any other architecture kills the process).
pub fn compile(
    arch: u32,
    rules: &BTreeMap<u32, Rule>,
    default: Action,
) -> Result<Vec<Insn>, SeccompError> {
    for (nr, rule) in rules {
        if let Rule::Arg { arg, tests, .. } = rule {
            if *arg > 5 {
                return Err(SeccompError::BadArg { nr: *nr, arg: *arg });
            }
            // Each test is one instruction and the first jumps over all the others: a
            // short jump spans 255.
            if tests.len() > 250 {
                return Err(SeccompError::TooManyTests(*nr));
            }
        }
    }
    let mut prog = vec![
        stmt(BPF_LD_W_ABS, ARCH),
        jump(BPF_JEQ_K, arch, 1, 0),
        stmt(BPF_RET_K, Action::KillProcess.ret()),
        stmt(BPF_LD_W_ABS, NR),
    ];
    let segs = segments(rules, default);
    tree(&segs, &mut prog);
    if prog.len() > MAX_INSNS {
        return Err(SeccompError::TooLong(prog.len()));
    }
    Ok(prog)
}

/// A run of system call numbers from `start` (to the next segment's start) with one rule.
#[derive(Debug)]
struct Segment<'a> {
    start: u32,
    rule: Leaf<'a>,
}

#[derive(Debug, PartialEq)]
enum Leaf<'a> {
    Ret(Action),
    Arg(&'a Rule),
}

/// Cuts the number space (0..=u32::MAX) into runs with one answer: neighbouring numbers
/// with the same constant action share a run; an argument rule is a run of one.
fn segments(rules: &BTreeMap<u32, Rule>, default: Action) -> Vec<Segment<'_>> {
    fn push<'a>(segs: &mut Vec<Segment<'a>>, start: u32, leaf: Leaf<'a>) {
        if let Some(last) = segs.last() {
            if matches!((&last.rule, &leaf), (Leaf::Ret(a), Leaf::Ret(b)) if a == b) {
                return;
            }
        }
        segs.push(Segment { start, rule: leaf });
    }
    let mut segs: Vec<Segment> = Vec::new();
    let mut next = 0u32;
    for (nr, rule) in rules {
        if *nr > next {
            push(&mut segs, next, Leaf::Ret(default));
        }
        let leaf = match rule {
            Rule::Always(a) => Leaf::Ret(*a),
            r @ Rule::Arg { .. } => Leaf::Arg(r),
        };
        // Two argument rules side by side stay apart: the merge above only joins constants.
        if let Leaf::Arg(_) = leaf {
            segs.push(Segment {
                start: *nr,
                rule: leaf,
            });
        } else {
            push(&mut segs, *nr, leaf);
        }
        match nr.checked_add(1) {
            Some(n) => next = n,
            None => return segs,
        }
    }
    push(&mut segs, next, Leaf::Ret(default));
    if segs.is_empty() {
        segs.push(Segment {
            start: 0,
            rule: Leaf::Ret(default),
        });
    }
    segs
}

/// Emits the search over `segs` (sorted, the first starting at or below every number that
/// reaches here) with the number in A: `jge` the middle segment's start, the lower half
/// first, then the upper; a lower half longer than a short jump is crossed by a `ja`.
fn tree(segs: &[Segment<'_>], out: &mut Vec<Insn>) {
    if let [only] = segs {
        leaf(&only.rule, out);
        return;
    }
    let mid = segs.len() / 2;
    let (lower, upper) = segs.split_at(mid);
    let mut left = Vec::new();
    tree(lower, &mut left);
    let k = upper[0].start;
    match u8::try_from(left.len()) {
        Ok(skip) => out.push(jump(BPF_JGE_K, k, skip, 0)),
        Err(_) => {
            // A >= k: fall onto the `ja` over the lower half; else skip the `ja`.
            out.push(jump(BPF_JGE_K, k, 0, 1));
            let far = u32::try_from(left.len()).unwrap_or(u32::MAX);
            out.push(stmt(BPF_JA, far));
        }
    }
    out.extend(left);
    tree(upper, out);
}

fn leaf(rule: &Leaf<'_>, out: &mut Vec<Insn>) {
    let (arg, tests, then, otherwise) = match rule {
        Leaf::Ret(a) => {
            out.push(stmt(BPF_RET_K, a.ret()));
            return;
        }
        Leaf::Arg(Rule::Arg {
            arg,
            tests,
            then,
            otherwise,
        }) => (*arg, tests, *then, *otherwise),
        // `segments` makes an argument leaf of argument rules only.
        Leaf::Arg(Rule::Always(a)) => {
            out.push(stmt(BPF_RET_K, a.ret()));
            return;
        }
    };
    // Laid out as: ld; [test → THEN]… ret OTHERWISE; THEN: ret THEN. No test changes A.
    out.push(stmt(BPF_LD_W_ABS, arg_low(arg)));
    for (i, t) in tests.iter().enumerate() {
        // After this jump: the remaining tests, then `ret otherwise`.
        let to_then = u8::try_from(tests.len() - i).unwrap_or(u8::MAX);
        out.push(match *t {
            Cmp::Eq(v) => jump(BPF_JEQ_K, v, to_then, 0),
            Cmp::Gt(v) => jump(BPF_JGT_K, v, to_then, 0),
            // arg < v ⇔ not arg >= v.
            Cmp::Lt(v) => jump(BPF_JGE_K, v, 0, to_then),
            // No bit of the mask set ⇔ not (arg & mask).
            Cmp::NoBitOf(m) => jump(BPF_JSET_K, m, 0, to_then),
        });
    }
    out.push(stmt(BPF_RET_K, otherwise.ret()));
    out.push(stmt(BPF_RET_K, then.ret()));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
pub(crate) mod tests {
    use super::*;

    /// `struct seccomp_data` as the filter sees it.
    pub(crate) struct Data {
        pub nr: u32,
        pub arch: u32,
        pub args: [u64; 6],
    }

    impl Data {
        fn word(&self, off: u32) -> u32 {
            let mut bytes = Vec::with_capacity(64);
            bytes.extend_from_slice(&self.nr.to_ne_bytes());
            bytes.extend_from_slice(&self.arch.to_ne_bytes());
            bytes.extend_from_slice(&0u64.to_ne_bytes());
            for a in self.args {
                bytes.extend_from_slice(&a.to_ne_bytes());
            }
            let o = off as usize;
            u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap())
        }
    }

    /// A classic BPF interpreter for what seccomp programs use; panics on anything else, on
    /// a jump out of the program and on a program that falls off its end.
    pub(crate) fn run(prog: &[Insn], d: &Data) -> u32 {
        let mut a = 0u32;
        let mut pc = 0usize;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 10_000, "loop");
            let i = prog[pc];
            let next = |jt: u8, jf: u8, c: bool| pc + 1 + usize::from(if c { jt } else { jf });
            pc = match i.code {
                BPF_LD_W_ABS => {
                    a = d.word(i.k);
                    pc + 1
                }
                BPF_JEQ_K => next(i.jt, i.jf, a == i.k),
                BPF_JGT_K => next(i.jt, i.jf, a > i.k),
                BPF_JGE_K => next(i.jt, i.jf, a >= i.k),
                BPF_JSET_K => next(i.jt, i.jf, a & i.k != 0),
                BPF_JA => pc + 1 + i.k as usize,
                BPF_RET_K => return i.k,
                // seccompiler's masked compares (the reference filters in confine's test).
                c if c == (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16 => {
                    a &= i.k;
                    pc + 1
                }
                c => panic!("opcode {c:#x}"),
            };
            assert!(pc < prog.len(), "jump past the end");
        }
    }

    fn data(nr: u32, arg0: u64) -> Data {
        Data {
            nr,
            arch: NATIVE_ARCH,
            args: [arg0, 0, 0, 0, 0, 0],
        }
    }

    #[test]
    fn each_number_gets_its_rule() {
        let mut rules = BTreeMap::new();
        rules.insert(0, Rule::Always(Action::Allow));
        rules.insert(1, Rule::Always(Action::Allow));
        rules.insert(5, Rule::Always(Action::Errno(38)));
        rules.insert(
            6,
            Rule::Arg {
                arg: 0,
                tests: vec![Cmp::Lt(38), Cmp::Eq(39), Cmp::Gt(40)],
                then: Action::Allow,
                otherwise: Action::Errno(1),
            },
        );
        rules.insert(
            7,
            Rule::Arg {
                arg: 1,
                tests: vec![Cmp::NoBitOf(0x7E02_0000)],
                then: Action::Allow,
                otherwise: Action::Errno(1),
            },
        );
        rules.insert(u32::MAX, Rule::Always(Action::Allow));
        let p = compile(NATIVE_ARCH, &rules, Action::Errno(1)).unwrap();
        let eperm = Action::Errno(1).ret();
        let allow = Action::Allow.ret();
        for (nr, want) in [
            (0, allow),
            (1, allow),
            (2, eperm),
            (4, eperm),
            (5, Action::Errno(38).ret()),
            (8, eperm),
            (0x4000_0000, eperm),
            (u32::MAX - 1, eperm),
            (u32::MAX, allow),
        ] {
            assert_eq!(run(&p, &data(nr, 0)), want, "nr {nr}");
        }
        for (a, want) in [
            (0, allow),
            (37, allow),
            (38, eperm),
            (39, allow),
            (40, eperm),
            (41, allow),
            // The low 32 bits count.
            ((1 << 32) | 38, eperm),
            ((1 << 32) | 39, allow),
        ] {
            assert_eq!(run(&p, &data(6, a)), want, "arg {a}");
        }
        let mut d = data(7, 0);
        d.args[1] = 0x0002_0000;
        assert_eq!(run(&p, &d), eperm);
        d.args[1] = 0x0001_0000;
        assert_eq!(run(&p, &d), allow);
        let mut foreign = data(0, 0);
        foreign.arch = 0x4000_0003;
        assert_eq!(run(&p, &foreign), Action::KillProcess.ret());
    }

    #[test]
    fn a_lower_half_past_a_short_jump_is_crossed_by_ja() {
        // Every other number allowed: 800 segments, a lower half of ~800 instructions.
        let rules: BTreeMap<u32, Rule> = (0..800)
            .filter(|n| n % 2 == 0)
            .map(|n| (n, Rule::Always(Action::Allow)))
            .collect();
        let p = compile(NATIVE_ARCH, &rules, Action::Errno(1)).unwrap();
        assert!(p.iter().any(|i| i.code == BPF_JA));
        for nr in 0..900 {
            let want = if nr < 800 && nr % 2 == 0 {
                Action::Allow
            } else {
                Action::Errno(1)
            };
            assert_eq!(run(&p, &data(nr, 0)), want.ret(), "nr {nr}");
        }
    }

    #[test]
    fn bad_rules_are_refused() {
        let mut rules = BTreeMap::new();
        rules.insert(
            3,
            Rule::Arg {
                arg: 6,
                tests: vec![Cmp::Eq(1)],
                then: Action::Allow,
                otherwise: Action::Errno(1),
            },
        );
        assert!(matches!(
            compile(NATIVE_ARCH, &rules, Action::Errno(1)),
            Err(SeccompError::BadArg { nr: 3, arg: 6 })
        ));
        let empty = compile(NATIVE_ARCH, &BTreeMap::new(), Action::Allow).unwrap();
        assert_eq!(run(&empty, &data(12, 0)), Action::Allow.ret());
    }
}
