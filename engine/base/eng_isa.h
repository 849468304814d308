/* eng_isa.h — the instruction-set cap of the project's own SIMD kernels (the index's float and
 * int8 kernels), so that they can be tested below the CPU's best the way oneDNN's are.
 *
 * The cap is read from the environment at each call (a test may setenv before an init):
 * BARLOWD_MAX_ISA if it is set to a known value, else ONEDNN_MAX_CPU_ISA (then its older name
 * DNNL_MAX_CPU_ISA), oneDNN's own cap, so that one variable lowers both oneDNN's kernels and ours.
 * Values are oneDNN's names, in any case: SSE41, AVX, AVX2, AVX2_VNNI, AVX512_MIC,
 * AVX512_MIC_4OPS, AVX512_CORE, AVX512_CORE_VNNI, AVX512_CORE_BF16, AVX512_CORE_AMX, ALL; plus
 * SCALAR, ours. We have no kernel between scalar and AVX2, nor above AVX-512 VNNI, so the names
 * fall into the levels below (the MIC ones, which lack AVX-512BW, are held at AVX2). A value that
 * is none of these is ignored, as oneDNN ignores one. libc only; never prints. */
#ifndef ENG_ISA_H
#define ENG_ISA_H

typedef enum eng_isa {
    ENG_ISA_SCALAR = 0,       /* no SIMD kernel of ours: SCALAR, SSE41, AVX */
    ENG_ISA_AVX2,             /* AVX2 + FMA: AVX2, AVX2_VNNI, AVX512_MIC, AVX512_MIC_4OPS */
    ENG_ISA_AVX512_CORE,      /* AVX-512 F, BW, VL, DQ: AVX512_CORE */
    ENG_ISA_AVX512_CORE_VNNI, /* and VNNI: AVX512_CORE_VNNI */
    ENG_ISA_ALL               /* no cap: AVX512_CORE_BF16, AVX512_CORE_AMX, ALL, or nothing set */
} eng_isa;

/* The level of a cap's name (case-insensitive) in *out. Returns -1 for an unknown name (or
 * NULL), *out then untouched. This function can't fail otherwise. */
int eng_isa_parse(const char *name, eng_isa *out);

/* The cap now in force (see above): ENG_ISA_ALL when no variable holds a known value. */
eng_isa eng_isa_cap(void);

/* "scalar", "avx2", "avx512_core", "avx512_core_vnni" or "all". */
const char *eng_isa_name(eng_isa isa);

#endif
