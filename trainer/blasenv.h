// blasenv.h — makes OpenBLAS use the kernels this CPU can run.
//
// OpenBLAS 0.3.21 (Debian 12's) does not recognise recent Xeons and falls back
// to its generic "Prescott" kernels, which run sgemm 4-5x slower than its
// SkylakeX ones on the same core (measured by tests/bench). OpenBLAS reads
// OPENBLAS_CORETYPE only while the library loads, so programs call
// blasenv_select_kernels(argv) first thing in main(): when OpenBLAS chose the
// generic kernels, the variable is unset, and the CPU has AVX-512 (SkylakeX)
// or AVX2+FMA (Haswell), it sets the variable and re-executes the program
// once. BREWSLM_BLAS_TUNE=0 turns this off.
#ifndef BLASENV_H
#define BLASENV_H

// Returns only when no re-exec happened (or it failed); never fails.
void blasenv_select_kernels(char **argv);
// The OpenBLAS kernel set in use ("SkylakeX", "Haswell", "Prescott", ...).
const char *blasenv_core_name(void);

#endif
