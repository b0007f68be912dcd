// blasenv.c — see blasenv.h: re-executes once with OPENBLAS_CORETYPE set when
// OpenBLAS fell back to generic kernels on a CPU that has better ones.
#include "blasenv.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *blasenv_core_name(void) {
    const char *name = openblas_get_corename();
    return name ? name : "unknown";
}

// The kernel set OpenBLAS should use on this CPU, or NULL to leave it alone.
static const char *better_core(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

void blasenv_select_kernels(char **argv) {
    const char *tune = getenv("BREWSLM_BLAS_TUNE");
    if (tune && strcmp(tune, "0") == 0) return;
    if (getenv("OPENBLAS_CORETYPE") || getenv("BREWSLM_BLAS_REEXEC")) return;
    const char *core = blasenv_core_name();
    // Only the generic fallbacks are replaced: a recognised CPU keeps its choice.
    if (strcasecmp(core, "Prescott") != 0 && strcasecmp(core, "Core2") != 0 &&
        strcasecmp(core, "Nehalem") != 0)
        return;
    const char *better = better_core();
    if (!better) return;
    if (setenv("OPENBLAS_CORETYPE", better, 1) != 0) return;
    if (setenv("BREWSLM_BLAS_REEXEC", "1", 1) != 0) return;
    execv("/proc/self/exe", argv);
    // exec failed (no /proc): carry on with the generic kernels.
    unsetenv("OPENBLAS_CORETYPE");
}
