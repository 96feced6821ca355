//! The CPUID a vCPU sees: KVM's supported set, with the APIC ID and topology filled in for this
//! vCPU (one socket, one thread per core, `vcpus` cores) and the hypervisor bit set, so the guest
//! finds kvm-clock through KVM's paravirtual leaves. KVM's asynchronous page faults are hidden:
//! nodes do not swap, so they buy nothing, and delivering their "page ready" interrupt left a
//! nested node's KVM (Debian 6.1) spinning in `kvm_check_async_pf_completion` for 20 minutes
//! (soft lockup of the vCPU thread, the guest frozen) while khugepaged moved guest memory.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_KVM_FEATURES: u32 = 0x4000_0001;
/// KVM_FEATURE_ASYNC_PF, KVM_FEATURE_ASYNC_PF_VMEXIT and KVM_FEATURE_ASYNC_PF_INT.
const EAX_KVM_ASYNC_PF: u32 = (1 << 4) | (1 << 10) | (1 << 14);
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// Bits needed to number `n` cores.
fn core_bits(n: u8) -> u32 {
    u32::from(n.max(1)).next_power_of_two().trailing_zeros()
}

/// Adjusts one entry for vCPU `id` of `count`.
pub fn patch_entry(e: &mut kvm_cpuid_entry2, id: u8, count: u8) {
    let apic = u32::from(id);
    match e.function {
        LEAF_FEATURES => {
            e.ebx = (e.ebx & 0x0000_ffff) | (apic << 24) | (u32::from(count) << 16);
            e.ecx |= ECX_HYPERVISOR;
            if count > 1 {
                e.edx |= EDX_HTT;
            }
        }
        LEAF_CACHE => {
            // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this cache - 1.
            let cores = u32::from(count.max(1)) - 1;
            let shared = if e.eax & 0xe0 >= 0x60 { cores } else { 0 };
            e.eax = (e.eax & 0x3fff) | (cores << 26) | (shared << 14);
        }
        LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
            e.edx = apic;
            match e.index {
                0 => {
                    e.eax = 0;
                    e.ebx = 1;
                    e.ecx = 1 << 8;
                }
                1 => {
                    e.eax = core_bits(count);
                    e.ebx = u32::from(count);
                    e.ecx = (2 << 8) | 1;
                }
                i => {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = i;
                }
            }
        }
        LEAF_KVM_FEATURES => e.eax &= !EAX_KVM_ASYNC_PF,
        _ => {}
    }
}

/// KVM's supported CPUID adjusted for vCPU `id` of `count`.
pub fn for_vcpu(supported: &CpuId, id: u8, count: u8) -> CpuId {
    let mut cpuid = supported.clone();
    for e in cpuid.as_mut_slice() {
        patch_entry(e, id, count);
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf1_carries_apic_id_and_hypervisor_bit() {
        let mut e = kvm_cpuid_entry2 {
            function: 1,
            ebx: 0x0000_0800,
            ..Default::default()
        };
        patch_entry(&mut e, 3, 4);
        assert_eq!(e.ebx >> 24, 3);
        assert_eq!((e.ebx >> 16) & 0xff, 4);
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
    }

    #[test]
    fn kvm_leaf_hides_async_page_faults_only() {
        let clock_and_eoi = (1 << 3) | (1 << 6);
        let mut e = kvm_cpuid_entry2 {
            function: LEAF_KVM_FEATURES,
            eax: clock_and_eoi | EAX_KVM_ASYNC_PF,
            ..Default::default()
        };
        patch_entry(&mut e, 0, 1);
        assert_eq!(e.eax, clock_and_eoi);
    }

    #[test]
    fn topology_leaf_counts_cores() {
        let mut e = kvm_cpuid_entry2 {
            function: 0xb,
            index: 1,
            ..Default::default()
        };
        patch_entry(&mut e, 2, 3);
        assert_eq!((e.eax, e.ebx, e.edx), (2, 3, 2));
        assert_eq!((e.ecx >> 8) & 0xff, 2, "core level");
    }
}
