/* The device's math library for code built against cudaemu: included ahead of every C++ source
 * that links cudaemu (its CMakeLists.txt adds `-include cudaemu_math.h`), so the kernels' and
 * kernels/bp_math.h's expf, logf, log1pf, tanhf and erff are the device's, as under nvcc, not
 * the host's libm. In variant 0 they are the host's; the variants (CUDAEMU_VARIANT,
 * cudaemu/README.md) return results as far from the exact value as the CUDA C++ Programming
 * Guide's ulp bounds allow them to be, within one ulp. (name)(x) calls the host's own. */
#ifndef CUDAEMU_MATH_H
#define CUDAEMU_MATH_H

#ifdef __cplusplus
#include <cmath>
extern "C" {
#endif
#include <math.h>

float cudaemu_expf(float x);
float cudaemu_logf(float x);
float cudaemu_log1pf(float x);
float cudaemu_tanhf(float x);
float cudaemu_erff(float x);

#ifdef __cplusplus
}
#endif

#define expf(x)   cudaemu_expf(x)
#define logf(x)   cudaemu_logf(x)
#define log1pf(x) cudaemu_log1pf(x)
#define tanhf(x)  cudaemu_tanhf(x)
#define erff(x)   cudaemu_erff(x)

#endif
