/*
 * optim/describe.h: the optimizer describes itself, so that the trainer names no optimizer type:
 * the banner line, its part of the log header, its memory plan rows, the refresh log lines, and
 * the executed FLOPs of its weight gradients (for the executed-FLOPs MFU). The text is what tools
 * read (dev/plot_logs.py, dev/study_table.py, gpu_check.sh): change it only with them.
 * Part of grass_optim.cuh (the list of the rooms, in include order).
 */
#ifndef GRASS_OPTIM_DESCRIBE_H
#define GRASS_OPTIM_DESCRIBE_H

#include <stdio.h>
#include "optim/state_io.h"

// --optimizer's value into c->type; 0 when it names no optimizer
static int optim_set_type(OptimConfig* c, const char* name) {
    int type = name_index(OPTIMIZER_NAMES, OPTIMIZER_COUNT, name);
    if (type < 0) return 0;
    c->type = (OptimizerType)type;
    return 1;
}

// --grass-norms auto resolves per run (optim_fit_norms) for this optimizer
static int optim_norms_fit_needed(const OptimConfig* c) { return c->norms == NORMS_AUTO && c->type == OPT_GRASS; }

// The banner line "optimizer: ..." (stdout). layers: --grass-layers as given; state_dtype: --state-dtype
// as given; grad_dtype: the dense gradients' dtype name.
static void optim_print_banner(const OptimConfig* c, const OptimRuntime* rt, float lr, const char* layers,
                               const char* state_dtype, const char* grad_dtype) {
    if (c->type == OPT_GRASS)
        printf("optimizer: grass (select %s, norms %s, upscale %s, rank %s%g, K=%d, alpha=%g, fused=%d, overlap=%d, "
               "layers %s), lr %g, %s states, %s dense gradients\n", GRASS_SELECT_NAMES[c->select],
               GRASS_NORMS_NAMES[c->norms], GRASS_UPSCALE_NAMES[c->upscale], c->grass_rank > 0 ? "" : "fraction ",
               c->grass_rank > 0 ? (float)c->grass_rank : c->grass_rank_frac, c->update_freq, c->alpha, c->fused,
               rt->overlap, layers, lr, state_dtype, grad_dtype);
    else if (c->type == OPT_GALORE)
        printf("optimizer: galore (rank %s%g, K=%d, alpha=%g, fused=%d, overlap=%d, layers %s), lr %g, %s states, "
               "%s dense gradients\n", c->grass_rank > 0 ? "" : "fraction ",
               c->grass_rank > 0 ? (float)c->grass_rank : c->grass_rank_frac, c->update_freq, c->alpha, c->fused,
               rt->overlap, layers, lr, state_dtype, grad_dtype);
    else printf("optimizer: adamw, lr %g (matrices x %g), weight decay %g, clip %g, %s states, %s dense gradients, "
                "overlap=%d\n", lr, c->matrix_lr_scale, c->weight_decay, c->grad_clip, state_dtype, grad_dtype,
                rt->overlap);
    // the conventions that tell GaLore from the published one (galore_torch 1.0: --galore-side official,
    // --adam-eps-style raw), and an eps style off the default (a line of its own: tools read the one above)
    if (c->type == OPT_GALORE)
        printf("  --galore-side %s, --adam-eps-style %s\n", GALORE_SIDE_NAMES[c->galore_side],
               ADAM_EPS_STYLE_NAMES[c->eps_style]);
    else if (c->eps_style == EPS_RAW)
        printf("  --adam-eps-style raw\n");
    // only where the rule differs from the method's before the flags, so that the banner above stays as it was
    if (optim_refresh_signature(c))
        printf("moments at a refresh: %s\n", c->type == OPT_GRASS
               ? "keep (--grass-refresh-state keep: rows selected again keep m, v rescaled to their new rho, and their "
                 "step counts)"
               : "reset (--galore-refresh-state reset: zero at each new projector, step count 0)");
}

// The optimizer's fields of the log header line (after "optimizer=NAME"); rank: --rank as given
static void optim_log_header(FILE* f, const OptimConfig* c, const char* rank) {
    if (c->type == OPT_GRASS)
        fprintf(f, " select=%s rank=%s update_freq=%d alpha=%g fused=%d", GRASS_SELECT_NAMES[c->select], rank,
                c->update_freq, c->alpha, c->fused);
    else if (c->type == OPT_GALORE)
        fprintf(f, " rank=%s update_freq=%d alpha=%g fused=%d", rank, c->update_freq, c->alpha, c->fused);
    else fprintf(f, " matrix_lr_scale=%g", c->matrix_lr_scale);
    if (optim_refresh_signature(c))  // written only where not the method's old rule (the header stays as it was)
        fprintf(f, " refresh_state=%s",
                REFRESH_STATE_NAMES[c->type == OPT_GRASS ? c->grass_refresh : c->galore_refresh]);
}

// The memory plan's rows for the projected gradients (after the dense gradients' row). fmt: the
// trainer's byte formatter (buf: 32 chars).
typedef const char* (*OptimFmtBytes)(size_t bytes, char* buf);
static void optim_plan_rows_gradients(const OptimConfig* c, const OptimPlan* op, OptimFmtBytes fmt) {
    char b[32];
    if (c->type == OPT_GRASS) {
        printf("  gradients (Grass) %12s  %s   (%zu projected parameters, no m x n gradient)\n", "",
               fmt(op->compressed_bytes, b), op->projected_params);
    }
    if (c->type == OPT_GALORE) {
        printf("  gradients (GaLore)%12s  %s   (%zu projected parameters, R = P^T G, no m x n gradient between "
               "refreshes)\n", "", fmt(op->compressed_bytes, b), op->projected_params);
    }
}

// The memory plan's rows for the refresh's passes and scratch (after the master weights' row)
static void optim_plan_rows_refresh(const OptimConfig* c, const OptimRuntime* rt, const OptimPlan* op,
                                    OptimFmtBytes fmt) {
    char b[32];
    if (c->type == OPT_GRASS) {
        const char* how[] = {"per micro-batch norms: exact here, one micro-batch on one rank",
                             "exact: one layer's fp32 gradients at a time",
                             "exact: every projected matrix's fp32 gradient", "sketch"};
        char sk[64] = "";
        if (rt->norm_path == NP_SKETCH) snprintf(sk, sizeof(sk), ", k=%d", c->sketch_dim);
        if (rt->norms == NORMS_MICRO) how[0] = "micro: the sum of per micro-batch norms";
        printf("  Grass norm pass   %12s  %s   (%s%s)\n", "", fmt(op->normpass_bytes, b), how[rt->norm_path], sk);
    }
    if (c->type == OPT_GALORE) {
        printf("  GaLore SVD pass   %12s  %s   (every %d steps: %s)\n", "", fmt(op->normpass_bytes, b), c->update_freq,
               rt->norm_path == NP_LAYER_G ? "one layer's fp32 gradients at a time"
                                           : "every projected matrix's fp32 gradient");
        printf("  GaLore scratch    %12s  %s   (SVD workspace, the largest matrix's dense update)\n", "",
               fmt(op->work_bytes, b));
    }
}

// what the plan's "optimizer other" row holds besides the norm scalars
static const char* optim_plan_other_note(const OptimConfig* c) {
    return c->type == OPT_GRASS ? "indices, scales, row norms, " : "";
}

// the communication plan's note on what a refresh adds (printed after the per-step volume)
static void optim_plan_comm_refresh(const OptimConfig* c, const OptimPlan* op) {
    if (c->type == OPT_GRASS)
        printf(" (+ %.3f MiB of row norms every %d steps)", op->comm_refresh_bytes / 1048576.0, c->update_freq);
    if (c->type == OPT_GALORE)
        printf(" (+ %.3f MiB of gradients for the SVDs every %d steps)", op->comm_refresh_bytes / 1048576.0,
               c->update_freq);
}

// After optim_refresh: the log line (numbered step_label, as the step's own line that follows) and,
// with print, the progress line on stdout
static void optim_log_refresh(const Optimizer* o, FILE* logf, int step_label, int print) {
    const OptimRefreshed* r = &o->refreshed;
    double captured = r->total > 0 ? r->kept / r->total : 0.0;
    // Grass: again, the share of the distinct rows that the previous selection held (0 at the first
    // refresh); trained, the share of all selectable rows chosen at some refresh of this process
    int grass = o->cfg.type == OPT_GRASS;
    double again = r->distinct > 0 ? (double)r->again / r->distinct : 0.0;
    double trained = r->selectable > 0 ? (double)r->trained / r->selectable : 0.0;
    fprintf(logf, "step=%d refresh=1 distinct=%d draws=%d mult_mean=%.4f mult_max=%.4f captured=%.4f sel_hash=%016llx "
            "rows=%d", step_label, r->distinct, r->draws, r->mult_mean, r->mult_max, captured,
            (unsigned long long)r->hash, r->rows);
    if (grass) fprintf(logf, " again=%.4f trained=%.4f", again, trained);
    fprintf(logf, "\n");
    if (print && o->cfg.type == OPT_GALORE)
        printf("refresh at step %d: new GaLore projectors (SVD of the step's gradient, %d directions in all), "
               "keeping %.1f%% of its squared norm\n", step_label, r->distinct, 100.0 * captured);
    else if (print)
        printf("refresh at step %d: %d distinct rows of %d draws (%.1f%% held before; %.1f%% of all rows chosen so "
               "far), step multiplier mean %.3f max %.3f, keeping %.1f%% of the gradient's squared norm\n", step_label,
               r->distinct, r->draws, 100.0 * again, 100.0 * trained, r->mult_mean, r->mult_max, 100.0 * captured);
}

// Executed FLOPs of tensor i's weight gradient per token (mn: its elements): dense dY^T X; Grass's
// gathered r x other; GaLore's projection (dY P or X P, then the r x other product; its per-step
// dense update P D is not counted)
static double optim_weight_grad_flops(const Optimizer* o, int i, double mn) {
    int k = o->gm_of_tensor[i];
    return k < 0 ? 2.0 * mn
         : o->cfg.type == OPT_GALORE ? 2.0 * o->gm[k].r * ((double)o->gm[k].dim_sel + o->gm[k].other)
         : 2.0 * o->gm[k].r_eff * o->gm[k].other;
}
// what a refresh's norm pass adds for tensor i besides its forward and input gradient: 2mn (norms
// or whole gradients) or 2k(m + n) (the sketch) for a projected matrix, nothing for a dense one
static double optim_norm_pass_flops(const Optimizer* o, int i, double mn) {
    int k = o->gm_of_tensor[i];
    if (k < 0) return 0.0;
    return o->rt.norm_path == NP_SKETCH ? 2.0 * o->cfg.sketch_dim * (o->gm[k].dim_sel + o->gm[k].other) : 2.0 * mn;
}

#endif // GRASS_OPTIM_DESCRIBE_H
