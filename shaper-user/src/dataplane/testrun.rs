//! BPF_PROG_TEST_RUN access to the loaded programs: used by the kernel fixture tests, the
//! differential test and the benchmark. Running a program this way touches the same maps as
//! live traffic would.

use aya::{
    maps::Array,
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};

use super::{Build, Dataplane, DataplaneError, Result, Role, map_err, prog_err};
use crate::abi;

/// What one XDP run returned.
#[derive(Clone, Debug, PartialEq)]
pub struct XdpRun {
    /// XDP action: 1 drop, 2 pass, 3 tx.
    pub action: u32,
    /// The frame after the program.
    pub output: Vec<u8>,
    /// Mean run time per repetition: the kernel's `bpf_test_run` already divides the total by
    /// the repeat count.
    pub ns_per_run: f64,
}

/// What one TC run returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcRun {
    pub priority: u32,
    pub output: Vec<u8>,
}

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// Offset of `priority` in `struct __sk_buff` (UAPI, stable since 4.x): len, pkt_type, mark,
/// queue_mapping, protocol, vlan_present, vlan_tci, vlan_proto, priority.
const SKB_PRIORITY_OFF: usize = 32;
const SKB_CTX_LEN: usize = 192;

impl Dataplane {
    /// Runs the XDP program of `role` on `frame`, `repeat` times.
    pub fn run_xdp(&self, role: Role, frame: &[u8], repeat: u32) -> Result<XdpRun> {
        let name = role.xdp_program();
        let prog: &Xdp = self
            .ebpf()
            .program(name)
            .expect("loaded")
            .try_into()
            .map_err(prog_err(name))?;
        // Room for the ICMP answers, which grow the head by up to 48 bytes.
        let mut out = vec![0u8; frame.len() + 256];
        let res = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat: repeat.max(1),
                ..Default::default()
            })
            .map_err(prog_err(name))?;
        out.truncate(res.data_size_out as usize);
        Ok(XdpRun {
            action: res.return_value,
            output: out,
            // bpf_test_run already reports the mean per repetition.
            ns_per_run: res.duration.as_nanos() as f64,
        })
    }

    /// Runs the TC egress program of `role` on `frame`: the `skb->priority` it left (0 when
    /// untouched, as the test context starts at 0) and the frame after it.
    pub fn run_tc(&self, role: Role, frame: &[u8]) -> Result<TcRun> {
        let name = role.tc_program();
        let prog: &SchedClassifier = self
            .ebpf()
            .program(name)
            .expect("loaded")
            .try_into()
            .map_err(prog_err(name))?;
        let ctx_in = vec![0u8; SKB_CTX_LEN];
        let mut ctx_out = vec![0u8; SKB_CTX_LEN];
        let mut out = vec![0u8; frame.len() + 64];
        let res = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                ..Default::default()
            })
            .map_err(prog_err(name))?;
        let mut b = [0u8; 4];
        b.copy_from_slice(&ctx_out[SKB_PRIORITY_OFF..SKB_PRIORITY_OFF + 4]);
        out.truncate(res.data_size_out as usize);
        Ok(TcRun {
            priority: u32::from_ne_bytes(b),
            output: out,
        })
    }

    /// Test build: sets the virtual clock the policer reads.
    pub fn set_test_clock(&mut self, now_ns: u64) -> Result<()> {
        self.need_test()?;
        let name = "shaper_test_clock";
        let mut m: Array<_, u64> =
            Array::try_from(self.ebpf_mut().map_mut(name).expect("test build"))
                .map_err(map_err(name))?;
        m.set(0, now_ns, 0).map_err(map_err(name))
    }

    /// Test build: what the last XDP run decided.
    pub fn last_record(&self) -> Result<abi::TestRecord> {
        self.need_test()?;
        let name = "shaper_test_last";
        let m: Array<_, abi::TestRecord> =
            Array::try_from(self.ebpf().map(name).expect("test build")).map_err(map_err(name))?;
        m.get(&0, 0).map_err(map_err(name))
    }

    /// How many instructions the verifier walked for each program (kernel ≥ 5.16).
    pub fn verified_instructions(&self) -> Result<Vec<(&'static str, u32)>> {
        [
            "shaper_xdp_sub",
            "shaper_xdp_up",
            "shaper_tc_down",
            "shaper_tc_up",
        ]
        .into_iter()
        .map(|name| {
            let info = self
                .ebpf()
                .program(name)
                .expect("loaded")
                .info()
                .map_err(prog_err(name))?;
            Ok((name, info.verified_instruction_count().unwrap_or(0)))
        })
        .collect()
    }

    fn need_test(&self) -> Result<()> {
        if self.options().build == Build::Test {
            Ok(())
        } else {
            Err(DataplaneError::WrongBuild("test"))
        }
    }
}
