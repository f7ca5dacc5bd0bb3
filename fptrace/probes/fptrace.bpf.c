// SPDX-License-Identifier: MIT
// fptrace: in-kernel collectors for FPU/xstate saves and restores.
//
// Built by BCC with -D macros that fptrace/probes/plan.py derives from the running kernel's
// tracefs and BTF.  No kernel struct is ever dereferenced through a header: every offset is a
// macro.  Reads are explicit bpf_probe_read_kernel() calls, except the two on the switch path
// in the tp_btf variant of each FPU probe (btf__*), which are plain BTF-checked loads.
//
// Hot path (the two switch-path events run on every context switch): a per-CPU,
// direct-mapped cache of CACHE_SLOTS counters sits in front of the shared `counts` hash map.
// A hit costs one per-CPU array access; a miss (new key) evicts the slot into `counts`,
// and does the rarer work: target filtering, task and VSO bookkeeping.  Counts are
// cumulative and never cleared here; user space takes deltas.
//
// A snapshot (collectors/counting.py) reads `counts` first, then the cache, and must never
// see one count in both places.  So an eviction zeroes the slot's count *before* adding it to
// `counts`, and a new key's count is written *after* the key; `seq` is bumped before every
// eviction, so that user space leaves out the cache of a CPU that evicted while it read.

#define fp_barrier() asm volatile("" ::: "memory")  // keep the stores in program order

struct fp_key {
    u32 pid;
    u32 tgid;
    u64 vso;        // fpstate address (never leaves the kernel unhashed: user space keys it)
    u64 xfeatures;  // XSTATE_BV of the buffer (aux events: signal number, requested feature)
    u16 event;
    u16 load_bits;  // bit i: TIF candidate bit i of current's flags; LOAD_NOT_READ: not read
    u16 arg;        // aux events: event-specific argument (e.g. arch_prctl option)
    u16 reason;     // switch-path saves: REASON_VOLUNTARY / REASON_INVOLUNTARY; else REASON_NONE
};

struct fp_val {
    u64 count;
    u64 first_ns;
    u64 last_ns;
};

struct slot {
    struct fp_key key;
    struct fp_val val;  // a hit only counts: even a clock read costs ~2% of a switch here,
                        // so last_ns is kept by user space at drain resolution
    u64 traced;         // 1: the key belongs to a traced task; 0: counted nowhere
};

// A VSO is one fpstate buffer of one task: the address alone is reused once a task dies.
struct vso_key {
    u64 vso;
    u32 pid;
    u32 pad;
};

struct vso_info {
    u32 pid;
    u32 tgid;
    u32 size;
    u32 user_size;
    u64 xfeatures;       // fpstate->xfeatures: features this buffer may hold (RFBM)
    u64 user_xfeatures;
    u64 xfd;
    u64 xcomp_bv;        // header XCOMP_BV at first sight: layout of the buffer
    u64 first_ns;
    u64 prev_vso;        // the task's previous VSO (replacement detection), 0 if none
    u32 flags;           // bit 0: is_valloc, bit 1: is_guest
    u32 pad;
};

struct task_info {
    u32 tgid;
    u32 ppid;            // parent tgid if seen forking, else 0
    u64 first_ns;
    u64 exit_ns;
    u64 base_runtime;    // se.sum_exec_runtime when first seen
    u64 base_switches;   // nvcsw + nivcsw when first seen
    u64 end_runtime;     // at exit
    u64 end_switches;
    u64 last_vso;
    u32 execs;
    u32 forked;          // 1 if created during the recording
    char comm[16];
    u64 start_ns;        // task->start_time: with the pid, the task's identity (pids are reused)
    u64 freed_ns;        // sched_process_free: after the task's final switch, nothing more comes
    u64 cgroup_id;       // cgroup v2 id (kernfs inode): at misses, moves (attach) and exit
};

#ifdef EVENTS
// --events: fixed-size records, gathered per CPU in batches of EVENT_BATCH and copied into
// the ring buffer a batch at a time (one ring operation per batch, not per event); user
// space decodes them in bulk (collectors/ring.py) and reads the partial batches at the end.
// EVENT_BATCH (a power of two) comes from probes/plan.py; collectors/ring.py decodes with it.
struct fp_event {
    u64 ts;         // bpf_ktime_get_ns
    u64 vso;
    u64 xfeatures;
    u32 pid;
    u32 tgid;
    u16 event;
    u16 load_bits;
    u16 cpu;
    u16 pad;
};
struct fp_batch {
    u32 n;
    u32 pad;
    struct fp_event e[EVENT_BATCH];
};
BPF_PERCPU_ARRAY(batches, struct fp_batch, 1);
BPF_RINGBUF_OUTPUT(events, EVENT_PAGES);
#endif

BPF_HASH(counts, struct fp_key, struct fp_val, MAX_COUNTS);
BPF_PERCPU_ARRAY(cache, struct slot, CACHE_SLOTS);
BPF_PERCPU_ARRAY(seq, u64, 1);
BPF_PERCPU_ARRAY(drops, u64, DROP_COUNTERS_N);
BPF_HASH(vsos, struct vso_key, struct vso_info, MAX_VSOS);
BPF_HASH(tasks, u32, struct task_info, MAX_TASKS);
// The recorder's own tgid, never traced.  A map, not a -D flag, so that the compiled program
// is the same for every run on a kernel build and can be cached (collectors/bpf_object.py).
BPF_ARRAY(self_tgid, u32, 1);
#if defined(EV_COPY_DST) && defined(PROBE_FORK)
// copy_dst fires inside copy_process() before the child has its pid: park the child's
// buffer under the forking thread until sched_process_fork names the child.
struct pending_copy {
    u64 vso;
    u64 xfeatures;
    u64 task;  // the child's task_struct
    u64 load_bits;
};
BPF_HASH(pending_copies, u32, struct pending_copy, 1024);
#endif
#ifdef FILTER_TARGETS
BPF_HASH(targets, u32, u8, MAX_TARGETS);
#endif
#ifdef FILTER_CGROUPS
// record --cgroup: the cgroup v2 ids asked for; a task in one of them or below is traced.
BPF_HASH(cgroup_targets, u64, u8, MAX_CGROUP_TARGETS);
#endif
#if defined(STACKS) && defined(PROBE_STACK_SWITCH)
// record --stacks: for saves with state beyond SSE live, the user and kernel stacks, counted
// per (task, XSTATE_BV, reason, stacks); at most one per STACK_PERIOD_NS per task.
//
// They are taken at sched_switch, not at regs_deactivated: by the time the FPU state is
// saved the CPU runs on the next task's page tables, so the previous task's user stack
// cannot be read (only its instruction pointer), and the kernel stack is in __switch_to,
// which the unwinder does not walk.  sched_switch comes first in the same switch on the same
// CPU; it takes the stacks of a traced task whose last save on this CPU had AVX or more
// live (stack_hints, written by regs_deactivated), and regs_deactivated keeps them if the
// state it saves has it too (pending_stacks pairs the two).  sched_switch runs on every
// switch, so it is kept to a per-CPU array lookup for everyone else; for a candidate, one
// switch in STACK_SKIP reads the clock for the per-second budget.
struct stack_key {
    u32 pid;
    u32 tgid;
    u64 xfeatures;
    s32 user_stack;    // user_stacks id, or a negative errno (none taken)
    s32 kernel_stack;  // kernel_stacks id, or a negative errno
    u16 reason;
    u16 pad0;
    u32 pad1;
};
// User stacks as (build-id, file offset) per frame, resolved by the kernel while the task's
// address space is there (an IP where it cannot); kernel stacks as addresses.
BPF_STACK_TRACE_BUILDID(user_stacks, STACK_ENTRIES);
BPF_STACK_TRACE(kernel_stacks, STACK_ENTRIES);
BPF_HASH(stack_counts, struct stack_key, u64, STACK_KEYS);
struct pending_stack {
    u32 pid;           // 0: none
    s32 user_stack;
    s32 kernel_stack;
    u32 pad;
};
BPF_PERCPU_ARRAY(pending_stacks, struct pending_stack, 1);
struct stack_hint {
    u32 pid;          // the traced task this slot is about (a direct-mapped cache by pid)
    u16 live;         // its last save on this CPU had state beyond SSE live
    u16 skip;         // switches since the last clock read
    u64 next_ns;      // no stack of it (on this CPU) before then
};
BPF_PERCPU_ARRAY(stack_hints, struct stack_hint, STACK_HINT_SLOTS);
#endif
#ifdef CALIBRATE_TIF
BPF_PERCPU_ARRAY(tif_cal, u64, 4);  // 0: OR of ~flags with load=1, 1: OR of flags with load=0, 2/3: counts
#endif

// DROP_COUNTS_FULL ... DROP_RING_FULL, DROP_COUNTERS_N, CACHE_SLOTS, LOAD_NOT_READ and
// EVENT_BATCH come as -D flags from probes/plan.py (shared_macros), which Python reads too.

static __always_inline u64 now_ns(void)
{
    return bpf_ktime_get_ns();
}



static __always_inline void count_drop(u32 which, u64 n)
{
    u64 *d = drops.lookup(&which);
    if (d)
        *d += n;
}

static __always_inline void emit(u32 pid, u32 tgid, u64 vso, u16 event, u64 xfeatures,
                                 u16 load_bits)
{
#ifdef EVENTS
    u32 zero = 0;
    struct fp_batch *b = batches.lookup(&zero);
    if (!b)
        return;
    u32 i = b->n & (EVENT_BATCH - 1);
    struct fp_event *e = &b->e[i];
    e->ts = bpf_ktime_get_ns();
    e->vso = vso;
    e->xfeatures = xfeatures;
    e->pid = pid;
    e->tgid = tgid;
    e->event = event;
    e->load_bits = load_bits;
    e->cpu = bpf_get_smp_processor_id();
    e->pad = 0;
    if (i + 1 < EVENT_BATCH) {
        b->n = i + 1;
        return;
    }
    b->n = 0;
    // User space polls the ring: no wake-up (an irq_work per commit once it has caught up).
    if (events.ringbuf_output(&b->e, sizeof(b->e), BPF_RB_NO_WAKEUP) != 0)
        count_drop(DROP_RING_FULL, EVENT_BATCH);
#endif
}

static __always_inline u64 read_u64(const void *addr)
{
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), addr);
    return v;
}

static __always_inline u32 read_u32(const void *addr)
{
    u32 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), addr);
    return v;
}

// The buffer an event is about: fpu->fpstate (5.16+) or the embedded fpu->state.
static __always_inline u64 vso_of(const void *fpu)
{
#ifdef HAVE_FPSTATE
    return read_u64(fpu + FPU_FPSTATE_OFF);
#else
    return (u64)fpu + FPU_STATE_OFF;
#endif
}

// The same two reads in a tp_btf program (BPF_TRACE_RAW_TP, attached by BTF id): its fpu
// argument is a BTF-typed kernel pointer, so the verifier allows plain loads through it,
// fault-safe and inlined, instead of a helper call (~23 ns per bpf_probe_read_kernel on the
// reference VM, twice per event).  The VSO is then a typed pointer to the verifier: it may
// be stored and compared (root), but not shifted or masked, so no hash takes it.
static __always_inline u64 vso_of_direct(const void *fpu)
{
#ifdef HAVE_FPSTATE
    return *(u64 *)(fpu + FPU_FPSTATE_OFF);
#else
    return (u64)fpu + FPU_STATE_OFF;
#endif
}

// The task whose fpu an event is about, as a BTF pointer, without a helper call.  The kernel
// keeps struct fpu at a fixed place relative to its task_struct (TASK_FPU_OFF: inside
// task->thread up to 6.15, right after the task_struct since), and the kfunc
// bpf_rdonly_cast() (6.2+), which the verifier turns into a register move, types the
// address so that the task's fields are plain fault-safe loads.  On the two switch-path
// events that task is current (kernel-fpu.md); each helper call there would cost a call and
// a return (~7 ns with this VM's return-thunk mitigation) on every context switch.
#ifdef TASK_FROM_FPU
static void *(*fp_rdonly_cast)(const void *obj, u32 btf_id) = (void *)KFUNC_BPF_RDONLY_CAST;
static __always_inline const void *task_of_fpu(const void *fpu)
{
    return fp_rdonly_cast(fpu - TASK_FPU_OFF, TASK_STRUCT_BTF_ID);
}
#endif

static __always_inline u64 regs_of(u64 vso)
{
#ifdef HAVE_FPSTATE
    return vso + FPSTATE_REGS_OFF;
#else
    return vso;
#endif
}

static __always_inline u64 task_switches(const void *task)
{
    return read_u64(task + TASK_NVCSW_OFF) + read_u64(task + TASK_NIVCSW_OFF);
}

static __always_inline u64 task_runtime(const void *task)
{
#ifdef TASK_RUNTIME_OFF
    return read_u64(task + TASK_RUNTIME_OFF);
#else
    return 0;
#endif
}

// Is the process (tgid) traced?  Only consulted on cache misses.
static __always_inline int is_traced(u32 tgid)
{
    u32 zero = 0;
    u32 *self = self_tgid.lookup(&zero);
    if (tgid == 0 || !self || tgid == *self)
        return 0;
#if defined(FILTER_TARGETS)
    return targets.lookup(&tgid) != NULL;
#elif defined(FILTER_CGROUPS)
    // current's cgroup or one of its ancestors (level 0 is the root): a cgroup created below
    // a traced one during the run is traced too, with no user-space step.
#pragma unroll
    for (int level = 0; level < CGROUP_MAX_DEPTH; level++) {
        u64 id = bpf_get_current_ancestor_cgroup_id(level);
        if (id == 0)
            return 0;
        if (cgroup_targets.lookup(&id))
            return 1;
    }
    return 0;
#else
    return 1;
#endif
}

static __always_inline u64 task_start(const void *task)
{
#ifdef TASK_START_OFF
    return read_u64(task + TASK_START_OFF);
#else
    return 0;
#endif
}

// First sight of a task: remember who it is and its switch/runtime counters, so that the
// recording gives switches and on-CPU time during the trace without a sched_switch probe.
// An entry of an exited task whose pid the kernel gave to a new one is replaced (user
// space removes exited tasks' entries once drained, so this only happens when a pid comes
// back within an interval or two).
static __always_inline struct task_info *note_task(u32 pid, u32 tgid, const void *task, u64 now)
{
    u64 start = task_start(task);
    struct task_info *ti = tasks.lookup(&pid);
    if (ti && !(ti->exit_ns && ti->start_ns && start && ti->start_ns != start)) {
        ti->cgroup_id = bpf_get_current_cgroup_id();  // on a miss only: it may have moved
        if (ti->tgid == 0)  // created by the fork probe, which cannot see the child's tgid
            ti->tgid = tgid;
        if (ti->start_ns == 0)
            ti->start_ns = start;
        return ti;
    }
    struct task_info fresh = {};
    fresh.start_ns = start;
    fresh.tgid = tgid;
    fresh.first_ns = now;
    fresh.base_runtime = task_runtime(task);
    fresh.base_switches = task_switches(task);
    fresh.cgroup_id = bpf_get_current_cgroup_id();
    bpf_get_current_comm(&fresh.comm, sizeof(fresh.comm));
    int failed = ti ? tasks.update(&pid, &fresh) : tasks.insert(&pid, &fresh);
    if (failed) {
        ti = tasks.lookup(&pid);  // raced with another CPU
        if (!ti)
            count_drop(DROP_TASK_FULL, 1);
        return ti;
    }
    return tasks.lookup(&pid);
}

// First sight of a (task, buffer) pair: its attributes, and whether it replaced another one.
static __always_inline void note_vso(u64 vso, u32 pid, u32 tgid, struct task_info *ti, u64 now)
{
    struct vso_key vk = {.vso = vso, .pid = pid};
    if (vsos.lookup(&vk))
        return;
    struct vso_info v = {};
    v.pid = pid;
    v.tgid = tgid;
    v.first_ns = now;
#ifdef HAVE_FPSTATE
    v.size = read_u32((void *)vso + FPSTATE_SIZE_OFF);
    v.user_size = read_u32((void *)vso + FPSTATE_USER_SIZE_OFF);
    v.xfeatures = read_u64((void *)vso + FPSTATE_XFEATURES_OFF);
    v.user_xfeatures = read_u64((void *)vso + FPSTATE_USER_XFEATURES_OFF);
    v.xfd = read_u64((void *)vso + FPSTATE_XFD_OFF);
#ifdef FPSTATE_IS_VALLOC_BIT
    if ((read_u32((void *)vso + (FPSTATE_IS_VALLOC_BIT / 32) * 4) >> (FPSTATE_IS_VALLOC_BIT % 32)) & 1)
        v.flags |= 1;
#endif
#ifdef FPSTATE_IS_GUEST_BIT
    if ((read_u32((void *)vso + (FPSTATE_IS_GUEST_BIT / 32) * 4) >> (FPSTATE_IS_GUEST_BIT % 32)) & 1)
        v.flags |= 2;
#endif
#endif
    v.xcomp_bv = read_u64((void *)regs_of(vso) + 520);
    if (ti) {
        v.prev_vso = ti->last_vso;
        ti->last_vso = vso;
    }
    if (vsos.insert(&vk, &v) != 0 && !vsos.lookup(&vk))
        count_drop(DROP_VSO_FULL, 1);
}

#if defined(STACKS) && defined(PROBE_STACK_SWITCH)
// A save with state beyond SSE live: count the stacks sched_switch took for this switch.
static __always_inline void take_stack(u32 pid, u32 tgid, u64 xfeatures, u16 reason)
{
    u32 zero = 0;
    struct pending_stack *p = pending_stacks.lookup(&zero);
    if (!p || p->pid != pid)
        return;
    p->pid = 0;
    struct stack_key k = {};
    k.pid = pid;
    k.tgid = tgid;
    k.xfeatures = xfeatures;
    k.reason = reason;
    k.user_stack = p->user_stack;
    k.kernel_stack = p->kernel_stack;
    u64 *n = stack_counts.lookup(&k);
    if (n) {
        __sync_fetch_and_add(n, 1);
        return;
    }
    u64 one = 1;
    if (stack_counts.insert(&k, &one) != 0) {
        n = stack_counts.lookup(&k);
        if (n)
            __sync_fetch_and_add(n, 1);
        else
            count_drop(DROP_STACK_LOST, 1);
    }
}
static __always_inline void note_live(u32 pid, u64 xfeatures)
{
    u32 idx = (pid * 2654435761u) & (STACK_HINT_SLOTS - 1);
    struct stack_hint *h = stack_hints.lookup(&idx);
    if (!h)
        return;
    if (h->pid != pid) {
        h->pid = pid;
        h->skip = 0;
        h->next_ns = 0;
    }
    h->live = (xfeatures & STACK_LIVE_MASK) != 0;
}
#define MAYBE_STACK() \
    if (event == EV_REGS_DEACTIVATED) { \
        note_live(pid, xfeatures); \
        if (xfeatures & STACK_LIVE_MASK) \
            take_stack(pid, tgid, xfeatures, reason); \
    }
#else
#define MAYBE_STACK()
#endif

// Move a cache slot's counts into the shared map.
static __always_inline void merge_slot(struct slot *s)
{
    struct fp_val *v = counts.lookup(&s->key);
    if (!v) {
        if (counts.insert(&s->key, &s->val) == 0)
            return;
        v = counts.lookup(&s->key);  // another CPU inserted it first
        if (!v) {
            count_drop(DROP_COUNTS_FULL, 1);
            count_drop(DROP_LOST_EVENTS, s->val.count);
            return;
        }
    }
    __sync_fetch_and_add(&v->count, s->val.count);
    if (s->val.last_ns > v->last_ns)
        v->last_ns = s->val.last_ns;
}

// Rare events go straight to the shared map.
static __always_inline void bump_direct(u32 pid, u32 tgid, u64 vso, u16 event, u64 xfeatures,
                                        u16 load_bits, u16 arg)
{
    struct fp_key key = {};
    key.pid = pid;
    key.tgid = tgid;
    key.vso = vso;
    key.xfeatures = xfeatures;
    key.event = event;
    key.load_bits = load_bits;
    key.arg = arg;
    key.reason = REASON_NONE;
    emit(pid, tgid, vso, event, xfeatures, load_bits);
    struct fp_val *v = counts.lookup(&key);
    u64 now = now_ns();
    if (v) {
        __sync_fetch_and_add(&v->count, 1);
        v->last_ns = now;
        return;
    }
    struct fp_val fresh = {.count = 1, .first_ns = now, .last_ns = now};
    if (counts.insert(&key, &fresh) != 0) {
        v = counts.lookup(&key);
        if (v)
            __sync_fetch_and_add(&v->count, 1);
        else
            count_drop(DROP_AUX_FULL, 1);
    }
}

// direct: 1 in the tp_btf programs (btf__*), 0 in the raw tracepoint ones (fpu__*).
static __always_inline int on_fpu(struct bpf_raw_tracepoint_args *ctx, u16 event, int direct)
{
    const void *fpu = (const void *)ctx->args[0];
    u32 pid, tgid;
#ifdef TASK_FROM_FPU
    // The switch path: current's own fpu.  Not copy_dst (the child's fpu) nor the rare rest.
    const int own = direct && (event == EV_REGS_DEACTIVATED || event == EV_REGS_ACTIVATED);
    const void *cur = 0;
    if (own) {
        cur = task_of_fpu(fpu);
        pid = *(u32 *)(cur + TASK_PID_OFF);
        tgid = *(u32 *)(cur + TASK_TGID_OFF);
    } else
#else
    const int own = 0;
    const void *cur = 0;
#endif
    {
        u64 pid_tgid = bpf_get_current_pid_tgid();
        pid = pid_tgid;
        tgid = pid_tgid >> 32;
    }
    u32 filter_tgid = tgid;
    u64 vso, xfeatures;
    if (direct) {
        vso = vso_of_direct(fpu);
        xfeatures = *(u64 *)((void *)regs_of(vso) + 512);
    } else {
        vso = vso_of(fpu);
        xfeatures = read_u64((void *)regs_of(vso) + 512);
    }
    // load_fpu: TIF_NEED_FPU_LOAD of current.  On regs_activated it is what tells a restore of
    // the task's buffer (set) from the signal and KVM paths (clear), so it is always read
    // there: pairing with signal deliveries cannot see a handler that never returns
    // (siglongjmp).  In the tp_btf variant the read is a plain load through the BTF-typed
    // current task (CURRENT_TASK_BTF), not a helper call.  On regs_deactivated it is read
    // only with --load-fpu (LOAD_ON_SWITCH): saves are classified by pairing with `dropped`,
    // which is exact, and the read would cost on every switch (docs/overhead.md).
    // reason: why the task is leaving the CPU, from its __state (the task is current on the
    // switch path): still TASK_RUNNING = preempted (involuntary), anything else = it blocks
    // (voluntary).  Read at dropped too, so that the exit path's regs_deactivated and its
    // dropped (both with the task running) cancel within one reason.  One load.
    u16 reason = REASON_NONE;
#ifdef TASK_STATE_OFF
    if (event == EV_REGS_DEACTIVATED
#ifdef EV_DROPPED
        || event == EV_DROPPED
#endif
    ) {
        u32 state;
        if (own)
            state = *(u32 *)(cur + TASK_STATE_OFF);
#ifdef CURRENT_TASK_BTF
        else if (direct)
            state = *(u32 *)((void *)bpf_get_current_task_btf() + TASK_STATE_OFF);
        else
#endif
            state = read_u32((const void *)bpf_get_current_task() + TASK_STATE_OFF);
        reason = state ? REASON_VOLUNTARY : REASON_INVOLUNTARY;
    }
#endif
    u16 load_bits = LOAD_NOT_READ;
#ifdef TASK_TIF_OFF
#ifndef LOAD_ON_SWITCH
    if (event != EV_REGS_DEACTIVATED)
#endif
    {
        u64 tif;
        if (own)
            tif = *(u64 *)(cur + TASK_TIF_OFF);
#ifdef CURRENT_TASK_BTF
        else if (direct)
            tif = *(u64 *)((void *)bpf_get_current_task_btf() + TASK_TIF_OFF);
        else
#endif
            tif = read_u64((const void *)bpf_get_current_task() + TASK_TIF_OFF);
        load_bits = ((tif >> TIF_BIT_0) & 1) | (((tif >> TIF_BIT_1) & 1) << 1);
    }
#endif
#ifdef EV_COPY_DST
    if (event == EV_COPY_DST) {  // rare: one per fork; the fpu is the child's
        if (!is_traced(filter_tgid))
            return 0;
#ifdef PROBE_FORK
        struct pending_copy pc = {.vso = vso, .xfeatures = xfeatures,
                                  .task = (u64)(fpu - TASK_FPU_OFF), .load_bits = load_bits};
        pending_copies.update(&pid, &pc);
#else
        bump_direct(pid, tgid, vso, event, xfeatures, load_bits, 0);  // the parent's account
#endif
        return 0;
    }
#endif
    // The slot: a group of 8 chosen by the task and XSTATE_BV (not the VSO, see vso_of_direct:
    // a task's second buffer shares its slot, a rare miss), and within it a place per kind of
    // key, so that one task's switch-path keys never evict each other: a task that is
    // preempted one time and blocks the next (two reasons) would otherwise miss on every
    // save, which cost ~3 % of the switch benchmark (docs/overhead.md).
    // load_bits holds two candidate TIF bits (one is load_fpu, calibrated): their parity
    // picks between two slots, so a restore with and one without the load do not collide.
    u32 load = (load_bits ^ (load_bits >> 1)) & 1;  // LOAD_NOT_READ (0x8000): 0
    u32 kind;
    if (event == EV_REGS_DEACTIVATED)
        kind = reason + 3 * load;  // 0..5 (reason 0..2; load read only with --load-fpu)
    else if (event == EV_REGS_ACTIVATED)
        kind = 6 + load;  // 6, 7
    else
        kind = (event * 3 + load_bits + reason) & 7;  // rare events: anywhere in the group
    u32 h = pid ^ ((u32)xfeatures * 0x9E3779B1u);  // murmur3's finaliser: near pids spread
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    u32 idx = ((h << 3) | kind) & (CACHE_SLOTS - 1);
    struct slot *s = cache.lookup(&idx);
    if (!s)
        return 0;
    if (s->key.pid == pid && s->key.vso == vso && s->key.xfeatures == xfeatures &&
        s->key.event == event && s->key.load_bits == load_bits && s->key.reason == reason) {
        if (s->traced) {
            s->val.count++;
            emit(pid, tgid, vso, event, xfeatures, load_bits);
            MAYBE_STACK();
        }
        return 0;
    }

    // Miss: evict, then install the new key.
    u64 now = now_ns();
    u32 zero = 0;
    u64 *sq = seq.lookup(&zero);
    if (sq)
        *sq += 1;
    if (s->traced && s->val.count) {
        struct slot old = *s;
        s->val.count = 0;  // first: never in the slot and in `counts` at once
        fp_barrier();
        old.val.last_ns = now;  // an upper bound: the key was last seen before this eviction
        merge_slot(&old);
    }
    u64 traced = is_traced(filter_tgid);
    if (traced) {
        const void *task = (const void *)bpf_get_current_task();
        struct task_info *ti = note_task(pid, tgid, task, now);
        note_vso(vso, pid, tgid, ti, now);
    }
    s->key.pid = pid;
    s->key.tgid = tgid;
    s->key.vso = vso;
    s->key.xfeatures = xfeatures;
    s->key.event = event;
    s->key.load_bits = load_bits;
    s->key.arg = 0;
    s->key.reason = reason;
    s->val.first_ns = now;
    s->val.last_ns = now;
    s->traced = traced;
    fp_barrier();
    s->val.count = traced;  // last: a half-written key has no count
    if (traced) {
        emit(pid, tgid, vso, event, xfeatures, load_bits);
        MAYBE_STACK();
    }
    return 0;
}

// FPU_DIRECT: the tp_btf variant (btf__*, loaded by collectors/tp_btf.py); else the raw
// tracepoint one (fpu__*), which user space rebuilds if a kernel refuses the tp_btf programs.
// One variant per build: each is a full copy of on_fpu, and compiling both costs ~0.1 s here
// (seconds in an emulated lab guest).
#ifdef FPU_DIRECT
#define FPU_PROBE(name, id) \
    int btf__x86_fpu_##name(struct bpf_raw_tracepoint_args *ctx) { return on_fpu(ctx, id, 1); }
#else
#define FPU_PROBE(name, id) \
    int fpu__x86_fpu_##name(struct bpf_raw_tracepoint_args *ctx) { return on_fpu(ctx, id, 0); }
#endif

#ifdef EV_REGS_DEACTIVATED
FPU_PROBE(regs_deactivated, EV_REGS_DEACTIVATED)
#endif
#ifdef EV_REGS_ACTIVATED
FPU_PROBE(regs_activated, EV_REGS_ACTIVATED)
#endif
#ifdef EV_DROPPED
FPU_PROBE(dropped, EV_DROPPED)
#endif
#ifdef EV_COPY_DST
FPU_PROBE(copy_dst, EV_COPY_DST)
#endif
#ifdef EV_BEFORE_SAVE
FPU_PROBE(before_save, EV_BEFORE_SAVE)
#endif
#ifdef EV_AFTER_SAVE
FPU_PROBE(after_save, EV_AFTER_SAVE)
#endif
#ifdef EV_XSTATE_CHECK_FAILED
FPU_PROBE(xstate_check_failed, EV_XSTATE_CHECK_FAILED)
#endif
#ifdef EV_COPY_SRC
FPU_PROBE(copy_src, EV_COPY_SRC)
#endif
#ifdef EV_BEFORE_RESTORE
FPU_PROBE(before_restore, EV_BEFORE_RESTORE)
#endif
#ifdef EV_AFTER_RESTORE
FPU_PROBE(after_restore, EV_AFTER_RESTORE)
#endif
#ifdef EV_INIT_STATE
FPU_PROBE(init_state, EV_INIT_STATE)
#endif
#ifdef EV_ACTIVATE_STATE
FPU_PROBE(activate_state, EV_ACTIVATE_STATE)
#endif
#ifdef EV_DEACTIVATE_STATE
FPU_PROBE(deactivate_state, EV_DEACTIVATE_STATE)
#endif

#if defined(STACKS) && defined(PROBE_STACK_SWITCH)
// sched_switch (raw tracepoint or tp_btf, like the FPU probes): current is the task leaving.
static __always_inline int on_switch(struct bpf_raw_tracepoint_args *ctx)
{
    u32 zero = 0;
    struct pending_stack *p = pending_stacks.lookup(&zero);
    if (!p)
        return 0;
    p->pid = 0;
    u32 pid = bpf_get_current_pid_tgid();
    u32 idx = (pid * 2654435761u) & (STACK_HINT_SLOTS - 1);
    struct stack_hint *h = stack_hints.lookup(&idx);
    if (!h || h->pid != pid || !h->live || ++h->skip < STACK_SKIP)
        return 0;
    h->skip = 0;
    u64 now = bpf_ktime_get_ns();
    if (now < h->next_ns)
        return 0;
    h->next_ns = now + STACK_PERIOD_NS;
    s32 user = user_stacks.get_stackid(ctx, BPF_F_USER_STACK);
    s32 kernel = kernel_stacks.get_stackid(ctx, 0);
    if (user < 0 && kernel < 0) {
        count_drop(DROP_STACK_LOST, 1);
        return 0;
    }
    p->user_stack = user;
    p->kernel_stack = kernel;
    p->pid = pid;
    return 0;
}
#ifdef FPU_DIRECT
int btf__sched_switch(struct bpf_raw_tracepoint_args *ctx) { return on_switch(ctx); }
#else
int fpu__sched_switch(struct bpf_raw_tracepoint_args *ctx) { return on_switch(ctx); }
#endif
#endif

// ---- classic tracepoints (auto-attached by BCC when compiled in) ----

// The calling thread's entry, if it is a traced task.
static __always_inline struct task_info *current_task_info(void)
{
    u32 pid = bpf_get_current_pid_tgid();
    return tasks.lookup(&pid);
}

#ifdef CALIBRATE_TIF
// Which bit of thread_info.flags is TIF_NEED_FPU_LOAD?  Compare current's flags with the
// record's load_fpu for the first events; user space detaches this probe once it knows.
TRACEPOINT_PROBE(x86_fpu, x86_fpu_regs_activated)
{
    u32 which = args->load_fpu ? 0 : 1;
    u32 nidx = which + 2;
    u64 *n = tif_cal.lookup(&nidx);
    u64 *acc = tif_cal.lookup(&which);
    if (!n || !acc || *n >= 256)
        return 0;
    u64 flags = read_u64((void *)bpf_get_current_task() + TASK_TIF_OFF);
    *acc |= which == 0 ? ~flags : flags;
    *n += 1;
    return 0;
}
#endif

#ifdef PROBE_FORK
TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u32 ptgid = bpf_get_current_pid_tgid() >> 32;
    if (!is_traced(ptgid))
        return 0;
    u32 child = args->child_pid;
    u32 child_tgid = 0;
    u64 child_vso = 0;
#if defined(EV_COPY_DST) && defined(PROBE_FORK)
    u64 pc_task = 0;
    u32 self = bpf_get_current_pid_tgid();
    struct pending_copy *pc = pending_copies.lookup(&self);
    if (pc) {
        pc_task = pc->task;
        child_tgid = read_u32((void *)pc->task + TASK_TGID_OFF);
        child_vso = pc->vso;
        bump_direct(child, child_tgid, child_vso, EV_COPY_DST, pc->xfeatures, pc->load_bits, 0);
        pending_copies.delete(&self);
    }
#endif
#ifdef FILTER_TARGETS
    u8 one = 1;
    if (targets.update(&child, &one) != 0)
        count_drop(DROP_TARGET_FULL, 1);
#endif
    struct task_info *ti = tasks.lookup(&child);
    if (ti && ti->exit_ns)  // an exited task's entry not yet removed: the pid is the child's now
        ti = NULL;
    if (ti) {
        ti->ppid = ptgid;
        ti->forked = 1;
    } else {
        struct task_info fresh = {};
#if defined(EV_COPY_DST) && defined(PROBE_FORK)
        if (pc_task)
            fresh.start_ns = task_start((const void *)pc_task);
#endif
        fresh.tgid = child_tgid;
        fresh.ppid = ptgid;
        fresh.forked = 1;
        fresh.first_ns = now_ns();
        fresh.cgroup_id = bpf_get_current_cgroup_id();  // the parent's, until the child runs
        bpf_get_current_comm(&fresh.comm, sizeof(fresh.comm));
        if (tasks.update(&child, &fresh) != 0 && !tasks.lookup(&child))
            count_drop(DROP_TASK_FULL, 1);
    }
#if defined(EV_COPY_DST) && defined(PROBE_FORK)
    if (child_vso)
        note_vso(child_vso, child, child_tgid, tasks.lookup(&child), now_ns());
#endif
    return 0;
}
#endif

#ifdef PROBE_EXEC
TRACEPOINT_PROBE(sched, sched_process_exec)
{
    struct task_info *ti = current_task_info();
    if (!ti)
        return 0;
    bpf_get_current_comm(&ti->comm, sizeof(ti->comm));
    ti->execs += 1;
    return 0;
}
#endif

#ifdef PROBE_EXIT
TRACEPOINT_PROBE(sched, sched_process_exit)
{
    struct task_info *ti = current_task_info();
    if (!ti)
        return 0;
    const void *task = (const void *)bpf_get_current_task();
    ti->end_runtime = task_runtime(task);
    ti->end_switches = task_switches(task);
    ti->exit_ns = now_ns();
    ti->cgroup_id = bpf_get_current_cgroup_id();
    bpf_get_current_comm(&ti->comm, sizeof(ti->comm));  // renamed since (prctl PR_SET_NAME)?
    return 0;
}
#endif

#ifdef PROBE_FREE
// The task_struct's RCU-delayed free: it follows the final switch (finish_task_switch
// drops the dead task's last rcu_users reference), so every event of the task is counted by
// now and user space can remove it at the next drain.  The pid was released earlier and may
// be a new task's already: only an exited entry is the one being freed.
TRACEPOINT_PROBE(sched, sched_process_free)
{
    u32 pid = args->pid;
    struct task_info *ti = tasks.lookup(&pid);
    if (ti && ti->exit_ns && !ti->freed_ns)
        ti->freed_ns = now_ns();
    return 0;
}
#endif

#ifdef PROBE_CGROUP_ATTACH
// A task moved to another cgroup: how a container starts (the runtime forks, moves the
// child, execs).  Its cgroup is otherwise read at its cache misses, and a task whose keys
// are all in cache slots has none until it exits, so until then its saves would count in
// the cgroup it left.  dst_root 0 is the cgroup v2 hierarchy (a hybrid host's v1
// hierarchies have their own numbers), and dst_id is the id bpf_get_current_cgroup_id()
// gives (5.5+, see probes/plan.py).  Rare: one event per task moved.
TRACEPOINT_PROBE(cgroup, cgroup_attach_task)
{
    if (args->dst_root != 0)
        return 0;
    u32 pid = args->pid;
    struct task_info *ti = tasks.lookup(&pid);
    if (ti && !ti->exit_ns)
        ti->cgroup_id = args->dst_id;
    return 0;
}
#endif

#ifdef PROBE_SIGNAL
TRACEPOINT_PROBE(signal, signal_deliver)
{
    // Only a caught signal builds a frame (XSAVE of the user state to the user stack).
    if (args->sa_handler <= 1)
        return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!is_traced(pid_tgid >> 32))
        return 0;
    bump_direct(pid_tgid, pid_tgid >> 32, 0, AUX_SIGNAL_DELIVER, args->sig, 0, 0);
    return 0;
}
#endif

#ifdef PROBE_ARCH_PRCTL
TRACEPOINT_PROBE(syscalls, sys_enter_arch_prctl)
{
    u64 option = args->option;
    if (option < ARCH_GET_XCOMP_SUPP || option > ARCH_REQ_XCOMP_GUEST_PERM)
        return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!is_traced(pid_tgid >> 32))
        return 0;
    // A REQ option's argument is an xfeature number; a GET option's is a user-space pointer,
    // which is never recorded (recordings are shared).
    u64 arg = option == ARCH_REQ_XCOMP_PERM || option == ARCH_REQ_XCOMP_GUEST_PERM ? args->arg2 : 0;
    bump_direct(pid_tgid, pid_tgid >> 32, 0, AUX_XCOMP_PERM, arg, 0, option);
    return 0;
}
#endif
