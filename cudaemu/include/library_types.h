/* cudaemu: the element types the CUDA libraries share (C11 and C++). Names and values are CUDA's;
 * only the real types are listed, the ones a matrix of the emulated cuBLASLt may hold and a few
 * it refuses by name. */
#ifndef CUDAEMU_LIBRARY_TYPES_H
#define CUDAEMU_LIBRARY_TYPES_H

typedef enum cudaDataType_t {
    CUDA_R_32F = 0,
    CUDA_R_64F = 1,
    CUDA_R_16F = 2,
    CUDA_R_8I = 3,
    CUDA_R_32I = 10,
    CUDA_R_16BF = 14,
    CUDA_R_8F_E4M3 = 28,
    CUDA_R_8F_E5M2 = 29,
    CUDAEMU_DATA_TYPE_RANGE_ = 0x7fffffff /* not CUDA's: any non-negative int is a value */
} cudaDataType_t;
typedef cudaDataType_t cudaDataType;

#endif
