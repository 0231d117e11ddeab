#!/bin/sh
# Hand check of the VM harness (see xtask/README.md): prints the guest
# kernel, checks that the BPF LSM is active and BTF is present, then exits 3
# so the host can check that the exit status comes through.
echo "kernel: $(uname -r) (KERNELSEAL_VM=$KERNELSEAL_VM, KERNELSEAL_VM_KERNEL=$KERNELSEAL_VM_KERNEL)"
lsm=$(cat /sys/kernel/security/lsm)
echo "lsm: $lsm"
case ",$lsm," in
*,bpf,*) echo "bpf LSM: active" ;;
*) echo "bpf LSM: MISSING"; exit 1 ;;
esac
if [ -e /sys/kernel/btf/vmlinux ]; then echo "btf: present"; else echo "btf: MISSING"; exit 1; fi
echo "kernelseal: $(ls -l /usr/bin/kernelseal)"
echo "this line went to stderr" >&2
exit 3
