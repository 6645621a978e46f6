/* Present this process as an x86-64 CPU without AVX-512 and without VNNI, so that a library that
 * dispatches on CPUID (onnxruntime's MLAS) runs the kernels it would run on such a CPU.
 *
 * Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID 0; /proc/cpuinfo flag "cpuid_fault") makes every
 * CPUID instruction of the calling thread, and of the threads it creates later, raise SIGSEGV. The
 * handler below executes the real CPUID (faulting switched off around it), clears the AVX-512, AVX-VNNI
 * and AMX feature bits of leaf 7, writes the result into the faulting thread's registers and steps over
 * the two-byte instruction. Any other SIGSEGV goes to the handler that was installed before.
 *
 * The instructions themselves still execute natively: only what CPUID reports changes. A library that
 * checks CPUID before it uses AVX-512 / VNNI (MLAS does, see onnxruntime/core/mlas/lib/platform.cpp)
 * then takes its AVX2 paths.
 *
 * Built and used by tests/_cpumask.py: call hwsim_mask_cpu() before the library loads. Or preload it with
 * HWSIM_MASK_CPU=1 in the environment (LD_PRELOAD=cpumask.so): it then masks at load, in every process
 * that inherits the environment (bench/_machine.py --avx2, Dask's worker processes included).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define ARCH_GET_CPUID 0x1011
#define ARCH_SET_CPUID 0x1012

static struct sigaction previous;
static volatile long trapped;

static void real_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static void on_segv(int sig, siginfo_t *info, void *ctx)
{
    ucontext_t *uc = (ucontext_t *)ctx;
    greg_t *g = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    if (ip[0] != 0x0F || ip[1] != 0xA2) {
        /* not a CPUID: give the signal back to whoever handled it before, and re-execute */
        sigaction(SIGSEGV, &previous, NULL);
        return;
    }
    uint32_t leaf = (uint32_t)g[REG_RAX], sub = (uint32_t)g[REG_RCX], r[4];
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    real_cpuid(leaf, sub, r);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    if (leaf == 7 && sub == 0) {
        /* EBX: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31 */
        r[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) |
                  (1u << 31));
        /* ECX: VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14 */
        r[2] &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AMX-BF16 22, AVX512-FP16 23, AMX-TILE 24, AMX-INT8 25 */
        r[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        /* EAX: AVX-VNNI 4, AVX512-BF16 5, AMX-FP16 21, AVX-IFMA 23; EDX: AVX-VNNI-INT8 4, AVX-VNNI-INT16 10,
         * AVX10 19 */
        r[0] &= ~((1u << 4) | (1u << 5) | (1u << 21) | (1u << 23));
        r[3] &= ~((1u << 4) | (1u << 10) | (1u << 19));
    } else if (leaf == 0x24) {
        r[0] = r[1] = r[2] = r[3] = 0; /* AVX10 leaf */
    }
    g[REG_RAX] = r[0];
    g[REG_RBX] = r[1];
    g[REG_RCX] = r[2];
    g[REG_RDX] = r[3];
    g[REG_RIP] += 2;
    trapped++;
}

/* 0 on success, else the errno of the failing call (EINVAL / ENODEV: no CPUID faulting here) */
int hwsim_mask_cpu(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &previous) != 0)
        return errno;
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        int e = errno;
        sigaction(SIGSEGV, &previous, NULL);
        return e;
    }
    return 0;
}

/* how many CPUID instructions the handler has answered */
long hwsim_cpuid_trapped(void) { return trapped; }

/* LD_PRELOAD with HWSIM_MASK_CPU=1: mask before the program's own code runs */
__attribute__((constructor)) static void hwsim_mask_from_env(void)
{
    const char *v = getenv("HWSIM_MASK_CPU");
    if (v && v[0] == '1' && v[1] == 0) {
        int e = hwsim_mask_cpu();
        if (e) {
            fprintf(stderr, "cpumask: HWSIM_MASK_CPU=1 but CPUID faulting failed (errno %d)\n", e);
            _exit(3);
        }
    }
}
