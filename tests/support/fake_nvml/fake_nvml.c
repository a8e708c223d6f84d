/*
 * A stand-in for libnvidia-ml.so.1, for tests on machines without an NVIDIA GPU.
 *
 * It exports the C symbols that nvidia-ml-py (module ``pynvml``) resolves for the calls
 * airflow_adaptive.adapters.nvml.sampler makes, with the struct layouts of nvml.h (checked
 * against pynvml's own ctypes classes through fake_nvml_layout()):
 *
 *   nvmlInitWithFlags (nvidia-ml-py >= 11.5), nvmlInit_v2, nvmlInit, nvmlShutdown, nvmlErrorString,
 *   nvmlSystemGetDriverVersion, nvmlDeviceGetCount_v2, nvmlDeviceGetHandleByIndex_v2,
 *   nvmlDeviceGetHandleByUUID, nvmlDeviceGetUUID, nvmlDeviceGetName, nvmlDeviceGetMinorNumber,
 *   nvmlDeviceGetMemoryInfo (nvmlMemory_t), nvmlDeviceGetMemoryInfo_v2 (nvmlMemory_v2_t),
 *   nvmlDeviceGetUtilizationRates (nvmlUtilization_t),
 *   nvmlDeviceGetComputeRunningProcesses_v3, nvmlDeviceGetGraphicsRunningProcesses_v3
 *   (nvmlProcessInfo_v3_t, the same layout as _v2_t), nvmlDeviceGetProcessUtilization
 *   (nvmlProcessUtilizationSample_t), and fake_nvml_layout (sizeof/offsetof of those structs).
 *
 * Devices and processes come from the plain-text file named by $FAKE_NVML_CONFIG, re-read on
 * every call so a test can change them between two samples:
 *
 *   driver <version>                                              (optional)
 *   device <uuid> <name> <util_gpu> <util_mem> <mem_total> <mem_used> [<mem_reserved>]
 *   minor <device_index> <minor>           /dev/nvidia<minor> of that device (default: its index)
 *   process <device_index> <pid> <used_bytes|-> <sm_util|-> [compute|graphics]
 *   fail_init <code>                                              nvmlInit* returns <code>
 *   fail <function_name> <code>                                   that function returns <code>
 *
 * Memory as the driver reports it since R510: nvmlDeviceGetMemoryInfo_v2 gives used = <mem_used>
 * and reserved = <mem_reserved> (default 0) apart; the v1 nvmlDeviceGetMemoryInfo counts the
 * reservation in used. Devices are numbered in the order of their lines.
 * ``-`` as used_bytes reports NVML_VALUE_NOT_AVAILABLE; ``-`` as sm_util gives no
 * per-process utilisation sample for that process.  Lines starting with # are ignored.
 * If $FAKE_NVML_CALL_LOG names a file, every call appends its function name there.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define EXPORT __attribute__((visibility("default")))

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

/* ---- nvml.h struct layouts (the ones this stub fills) ---- */
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
/* NVML_STRUCT_VERSION(Memory, 2) in nvml.h: sizeof | version << 24 (= 0x02000028) */
#define nvmlMemory_v2 ((unsigned int)(sizeof(nvmlMemory_v2_t) | (2u << 24)))
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_v2_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_v3_t;
typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;

typedef struct fake_device *nvmlDevice_t;

/* ---- configuration ---- */
#define MAX_DEV 16
#define MAX_PROC 256
#define MAX_FAIL 64
#define NOT_AVAILABLE 0xFFFFFFFFFFFFFFFFULL

struct fake_device {
    char uuid[96];
    char name[96];
    unsigned int util_gpu, util_mem;
    unsigned long long mem_total, mem_used, mem_reserved;
    int minor; /* -1: the device's index */
};
struct fake_process {
    unsigned int device, pid, sm_util, has_sm;
    unsigned long long used;
    int graphics;
};
struct fake_fail { char fn[96]; int code; };

static struct fake_device g_dev[MAX_DEV];
static struct fake_process g_proc[MAX_PROC];
static struct fake_fail g_fail[MAX_FAIL];
static int g_ndev, g_nproc, g_nfail, g_fail_init;
static char g_driver[80];
static int g_initialized;

static void load_config(void) {
    g_ndev = g_nproc = g_nfail = g_fail_init = 0;
    strcpy(g_driver, "555.42.06-fake");
    const char *path = getenv("FAKE_NVML_CONFIG");
    if (!path) return;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512], a[128], b[128], c[128], d[128], e[128], g[128], h[128], k[128];
    while (fgets(line, sizeof line, f)) {
        int n = sscanf(line, "%127s %127s %127s %127s %127s %127s %127s %127s", a, b, c, d, e, g, h, k);
        if (n <= 0 || a[0] == '#') continue;
        if (!strcmp(a, "device") && n >= 7 && g_ndev < MAX_DEV) {
            struct fake_device *x = &g_dev[g_ndev++];
            snprintf(x->uuid, sizeof x->uuid, "%.95s", b);
            snprintf(x->name, sizeof x->name, "%.95s", c);
            x->util_gpu = (unsigned)strtoul(d, 0, 10);
            x->util_mem = (unsigned)strtoul(e, 0, 10);
            x->mem_total = strtoull(g, 0, 10);
            x->mem_used = strtoull(h, 0, 10);
            x->mem_reserved = n >= 8 ? strtoull(k, 0, 10) : 0;
            x->minor = -1;
        } else if (!strcmp(a, "minor") && n >= 3) {
            unsigned int i = (unsigned)strtoul(b, 0, 10);
            if (i < (unsigned)g_ndev) g_dev[i].minor = atoi(c);
        } else if (!strcmp(a, "process") && n >= 5 && g_nproc < MAX_PROC) {
            struct fake_process *p = &g_proc[g_nproc++];
            p->device = (unsigned)strtoul(b, 0, 10);
            p->pid = (unsigned)strtoul(c, 0, 10);
            p->used = !strcmp(d, "-") ? NOT_AVAILABLE : strtoull(d, 0, 10);
            p->has_sm = strcmp(e, "-") != 0;
            p->sm_util = p->has_sm ? (unsigned)strtoul(e, 0, 10) : 0;
            p->graphics = n >= 6 && !strcmp(g, "graphics");
        } else if (!strcmp(a, "fail_init") && n >= 2) {
            g_fail_init = atoi(b);
        } else if (!strcmp(a, "fail") && n >= 3 && g_nfail < MAX_FAIL) {
            snprintf(g_fail[g_nfail].fn, sizeof g_fail[g_nfail].fn, "%.95s", b);
            g_fail[g_nfail++].code = atoi(c);
        } else if (!strcmp(a, "driver") && n >= 2) {
            snprintf(g_driver, sizeof g_driver, "%.79s", b);
        }
    }
    fclose(f);
}

static void log_call(const char *fn) {
    const char *path = getenv("FAKE_NVML_CALL_LOG");
    if (!path) return;
    FILE *f = fopen(path, "a");
    if (!f) return;
    fprintf(f, "%s\n", fn);
    fclose(f);
}

/* Re-read the configuration; the configured failure code of `fn`, else 0. */
static int enter(const char *fn) {
    log_call(fn);
    load_config();
    for (int i = 0; i < g_nfail; i++)
        if (!strcmp(g_fail[i].fn, fn)) return g_fail[i].code;
    return 0;
}

#define ENTER(fn)                                        \
    do {                                                 \
        int rc_ = enter(fn);                             \
        if (rc_) return rc_;                             \
        if (!g_initialized) return NVML_ERROR_UNINITIALIZED; \
    } while (0)

static int device_index(nvmlDevice_t d) {
    if (d < g_dev || d >= g_dev + MAX_DEV) return -1;
    int i = (int)(d - g_dev);
    return i < g_ndev ? i : -1;
}

static unsigned long long now_us(void) {
    struct timeval tv;
    gettimeofday(&tv, 0);
    return (unsigned long long)tv.tv_sec * 1000000ULL + (unsigned long long)tv.tv_usec;
}

static int copy_string(char *dst, unsigned int len, const char *src) {
    if (!dst) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(dst, src);
    return NVML_SUCCESS;
}

/* ---- init / shutdown ---- */
static nvmlReturn_t do_init(const char *fn) {
    int rc = enter(fn);
    if (rc) return rc;
    if (g_fail_init) return g_fail_init;
    g_initialized++;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; return do_init("nvmlInitWithFlags"); }
EXPORT nvmlReturn_t nvmlInit_v2(void) { return do_init("nvmlInit_v2"); }
EXPORT nvmlReturn_t nvmlInit(void) { return do_init("nvmlInit"); }

EXPORT nvmlReturn_t nvmlShutdown(void) {
    ENTER("nvmlShutdown");
    g_initialized--;
    return NVML_SUCCESS;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    default: return "Unknown Error";
    }
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    ENTER("nvmlSystemGetDriverVersion");
    return copy_string(version, length, g_driver);
}

/* ---- devices ---- */
EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    ENTER("nvmlDeviceGetCount_v2");
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = (unsigned)g_ndev;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    ENTER("nvmlDeviceGetHandleByIndex_v2");
    if (!device || index >= (unsigned)g_ndev) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &g_dev[index];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    ENTER("nvmlDeviceGetHandleByUUID");
    if (!uuid || !device) return NVML_ERROR_INVALID_ARGUMENT;
    for (int i = 0; i < g_ndev; i++)
        if (!strcmp(g_dev[i].uuid, uuid)) { *device = &g_dev[i]; return NVML_SUCCESS; }
    return NVML_ERROR_NOT_FOUND;
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length) {
    ENTER("nvmlDeviceGetUUID");
    int i = device_index(d);
    if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
    return copy_string(uuid, length, g_dev[i].uuid);
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length) {
    ENTER("nvmlDeviceGetName");
    int i = device_index(d);
    if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
    return copy_string(name, length, g_dev[i].name);
}

EXPORT nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t d, unsigned int *minor) {
    ENTER("nvmlDeviceGetMinorNumber");
    int i = device_index(d);
    if (i < 0 || !minor) return NVML_ERROR_INVALID_ARGUMENT;
    *minor = g_dev[i].minor < 0 ? (unsigned)i : (unsigned)g_dev[i].minor;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *memory) {
    ENTER("nvmlDeviceGetMemoryInfo");
    int i = device_index(d);
    if (i < 0 || !memory) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long used = g_dev[i].mem_used + g_dev[i].mem_reserved;
    memory->total = g_dev[i].mem_total;
    memory->used = used;
    memory->free = g_dev[i].mem_total > used ? g_dev[i].mem_total - used : 0;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *memory) {
    ENTER("nvmlDeviceGetMemoryInfo_v2");
    int i = device_index(d);
    if (i < 0 || !memory) return NVML_ERROR_INVALID_ARGUMENT;
    if (memory->version != nvmlMemory_v2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    unsigned long long taken = g_dev[i].mem_used + g_dev[i].mem_reserved;
    memory->total = g_dev[i].mem_total;
    memory->reserved = g_dev[i].mem_reserved;
    memory->used = g_dev[i].mem_used;
    memory->free = g_dev[i].mem_total > taken ? g_dev[i].mem_total - taken : 0;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *util) {
    ENTER("nvmlDeviceGetUtilizationRates");
    int i = device_index(d);
    if (i < 0 || !util) return NVML_ERROR_INVALID_ARGUMENT;
    util->gpu = g_dev[i].util_gpu;
    util->memory = g_dev[i].util_mem;
    return NVML_SUCCESS;
}

/* nvml.h semantics: too small a buffer (or NULL) -> *count = needed, INSUFFICIENT_SIZE;
 * no processes -> *count = 0, SUCCESS. */
static nvmlReturn_t running_processes(nvmlDevice_t d, unsigned int *count, nvmlProcessInfo_v3_t *infos,
                                      int graphics) {
    int i = device_index(d);
    if (i < 0 || !count) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int n = 0;
    for (int k = 0; k < g_nproc; k++)
        if (g_proc[k].device == (unsigned)i && g_proc[k].graphics == graphics) n++;
    if (n == 0) { *count = 0; return NVML_SUCCESS; }
    if (!infos || *count < n) { *count = n; return NVML_ERROR_INSUFFICIENT_SIZE; }
    unsigned int j = 0;
    for (int k = 0; k < g_nproc; k++) {
        if (g_proc[k].device != (unsigned)i || g_proc[k].graphics != graphics) continue;
        infos[j].pid = g_proc[k].pid;
        infos[j].usedGpuMemory = g_proc[k].used;
        infos[j].gpuInstanceId = 0xFFFFFFFFu;
        infos[j].computeInstanceId = 0xFFFFFFFFu;
        j++;
    }
    *count = n;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count,
                                                             nvmlProcessInfo_v3_t *infos) {
    ENTER("nvmlDeviceGetComputeRunningProcesses_v3");
    return running_processes(d, count, infos, 0);
}

EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t d, unsigned int *count,
                                                              nvmlProcessInfo_v3_t *infos) {
    ENTER("nvmlDeviceGetGraphicsRunningProcesses_v3");
    return running_processes(d, count, infos, 1);
}

/* One sample per process with a configured sm_util, stamped now; NOT_FOUND when none is newer
 * than lastSeenTimeStamp (as the driver answers when no process ran kernels since then). */
EXPORT nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t d, nvmlProcessUtilizationSample_t *utilization,
                                                     unsigned int *processSamplesCount,
                                                     unsigned long long lastSeenTimeStamp) {
    ENTER("nvmlDeviceGetProcessUtilization");
    int i = device_index(d);
    if (i < 0 || !processSamplesCount) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long ts = now_us();
    unsigned int n = 0;
    for (int k = 0; k < g_nproc; k++)
        if (g_proc[k].device == (unsigned)i && g_proc[k].has_sm && ts > lastSeenTimeStamp) n++;
    if (n == 0) return NVML_ERROR_NOT_FOUND;
    if (!utilization || *processSamplesCount < n) { *processSamplesCount = n; return NVML_ERROR_INSUFFICIENT_SIZE; }
    unsigned int j = 0;
    for (int k = 0; k < g_nproc; k++) {
        if (g_proc[k].device != (unsigned)i || !g_proc[k].has_sm) continue;
        utilization[j].pid = g_proc[k].pid;
        utilization[j].timeStamp = ts;
        utilization[j].smUtil = g_proc[k].sm_util;
        utilization[j].memUtil = 0;
        utilization[j].encUtil = 0;
        utilization[j].decUtil = 0;
        j++;
    }
    *processSamplesCount = n;
    return NVML_SUCCESS;
}

/* ---- layout self-description, for the test against pynvml's ctypes classes ---- */
#define F(T, f) " " #f ":%zu"
#define O(T, f) offsetof(T, f)

EXPORT int fake_nvml_layout(char *buf, int len) {
    return snprintf(buf, (size_t)len,
        "nvmlMemory_t %zu" F(, total) F(, free) F(, used) "\n"
        "nvmlMemory_v2_t %zu" F(, version) F(, total) F(, reserved) F(, free) F(, used) "\n"
        "nvmlUtilization_t %zu" F(, gpu) F(, memory) "\n"
        "nvmlProcessInfo_v2_t %zu" F(, pid) F(, usedGpuMemory) F(, gpuInstanceId) F(, computeInstanceId) "\n"
        "nvmlProcessInfo_v3_t %zu" F(, pid) F(, usedGpuMemory) F(, gpuInstanceId) F(, computeInstanceId) "\n"
        "nvmlProcessUtilizationSample_t %zu" F(, pid) F(, timeStamp) F(, smUtil) F(, memUtil) F(, encUtil)
            F(, decUtil) "\n",
        sizeof(nvmlMemory_t), O(nvmlMemory_t, total), O(nvmlMemory_t, free), O(nvmlMemory_t, used),
        sizeof(nvmlMemory_v2_t), O(nvmlMemory_v2_t, version), O(nvmlMemory_v2_t, total),
            O(nvmlMemory_v2_t, reserved), O(nvmlMemory_v2_t, free), O(nvmlMemory_v2_t, used),
        sizeof(nvmlUtilization_t), O(nvmlUtilization_t, gpu), O(nvmlUtilization_t, memory),
        sizeof(nvmlProcessInfo_v2_t), O(nvmlProcessInfo_v2_t, pid), O(nvmlProcessInfo_v2_t, usedGpuMemory),
            O(nvmlProcessInfo_v2_t, gpuInstanceId), O(nvmlProcessInfo_v2_t, computeInstanceId),
        sizeof(nvmlProcessInfo_v3_t), O(nvmlProcessInfo_v3_t, pid), O(nvmlProcessInfo_v3_t, usedGpuMemory),
            O(nvmlProcessInfo_v3_t, gpuInstanceId), O(nvmlProcessInfo_v3_t, computeInstanceId),
        sizeof(nvmlProcessUtilizationSample_t), O(nvmlProcessUtilizationSample_t, pid),
            O(nvmlProcessUtilizationSample_t, timeStamp), O(nvmlProcessUtilizationSample_t, smUtil),
            O(nvmlProcessUtilizationSample_t, memUtil), O(nvmlProcessUtilizationSample_t, encUtil),
            O(nvmlProcessUtilizationSample_t, decUtil));
}
