/* eng_isa.c — parsing the ISA cap of our own kernels (BARLOWD_MAX_ISA, ONEDNN_MAX_CPU_ISA); see
 * eng_isa.h. */
#include "eng_isa.h"

#include <stdlib.h>
#include <strings.h>

/* Every name a cap may take, with its level. */
static const struct {
    const char *name;
    eng_isa level;
} isa_names[] = {
    {"SCALAR", ENG_ISA_SCALAR},
    {"SSE41", ENG_ISA_SCALAR},
    {"AVX", ENG_ISA_SCALAR},
    {"AVX2", ENG_ISA_AVX2},
    {"AVX2_VNNI", ENG_ISA_AVX2},
    {"AVX512_MIC", ENG_ISA_AVX2},
    {"AVX512_MIC_4OPS", ENG_ISA_AVX2},
    {"AVX512_CORE", ENG_ISA_AVX512_CORE},
    {"AVX512_CORE_VNNI", ENG_ISA_AVX512_CORE_VNNI},
    {"AVX512_CORE_BF16", ENG_ISA_ALL},
    {"AVX512_CORE_AMX", ENG_ISA_ALL},
    {"ALL", ENG_ISA_ALL},
};

int eng_isa_parse(const char *name, eng_isa *out) {
    if (!name) return -1;
    for (size_t i = 0; i < sizeof isa_names / sizeof *isa_names; i++)
        if (!strcasecmp(name, isa_names[i].name)) {
            *out = isa_names[i].level;
            return 0;
        }
    return -1;
}

eng_isa eng_isa_cap(void) {
    static const char *const vars[] = {"BARLOWD_MAX_ISA", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"};
    eng_isa isa;
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        if (eng_isa_parse(getenv(vars[i]), &isa) == 0) return isa;
    return ENG_ISA_ALL;
}

const char *eng_isa_name(eng_isa isa) {
    switch (isa) {
    case ENG_ISA_SCALAR: return "scalar";
    case ENG_ISA_AVX2: return "avx2";
    case ENG_ISA_AVX512_CORE: return "avx512_core";
    case ENG_ISA_AVX512_CORE_VNNI: return "avx512_core_vnni";
    case ENG_ISA_ALL: break;
    }
    return "all";
}
