/*
 * Torch binding for the kernels in rwkv7.h: checks tensors (device, dtype, shape, layout),
 * then calls the C launchers on torch's current CUDA stream. Built on first use by
 * engine/backends/cuda_build.py with torch.utils.cpp_extension.load; the Python side is
 * engine/backends/cuda.py. Every error is a one-line c10::Error (a RuntimeError in Python).
 */
#include <torch/extension.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <optional>
#include <vector>

#include "rwkv7.h"

namespace {

rwkv7_dtype dtype_code(at::ScalarType type) {
    switch (type) {
    case at::kFloat: return RWKV7_F32;
    case at::kHalf: return RWKV7_F16;
    case at::kBFloat16: return RWKV7_BF16;
    default: TORCH_CHECK(false, "rwkv7: unsupported dtype ", type, " (use fp32, fp16 or bf16)");
    }
}

void check_tensor(const at::Tensor &t, const char *name, at::ScalarType type, const at::Device &device) {
    TORCH_CHECK(t.defined(), "rwkv7: ", name, " is missing");
    TORCH_CHECK(t.device() == device, "rwkv7: ", name, " is on ", t.device(), ", expected ", device);
    TORCH_CHECK(t.scalar_type() == type, "rwkv7: ", name, " is ", t.scalar_type(), ", expected ", type);
    TORCH_CHECK(t.is_contiguous(), "rwkv7: ", name, " must be contiguous");
}

void check_shape(const at::Tensor &t, const char *name, at::IntArrayRef shape) {
    TORCH_CHECK(t.sizes() == shape, "rwkv7: ", name, " has shape ", t.sizes(), ", expected ", shape);
}

void check_launch(cudaError_t err, const char *what) {
    TORCH_CHECK(err == cudaSuccess, "rwkv7: ", what, " failed: ", cudaGetErrorString(err));
}

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

const float *f32(const at::Tensor &t) { return t.data_ptr<float>(); }
float *f32_mut(const at::Tensor &t) { return t.data_ptr<float>(); }

/* A [B][H][N][N] fp32 state view whose rows are contiguous (the batch stride may be anything). */
void check_state(const at::Tensor &s, const char *name, int64_t B, int64_t H, int64_t N, const at::Device &device) {
    TORCH_CHECK(s.defined() && s.device() == device && s.scalar_type() == at::kFloat,
                "rwkv7: ", name, " must be a float32 tensor on ", device);
    check_shape(s, name, {B, H, N, N});
    TORCH_CHECK(s.stride(3) == 1 && s.stride(2) == N && s.stride(1) == N * N,
                "rwkv7: ", name, " must have contiguous [H][N][N] matrices");
}

/* ---------------------------------------------------------------- prefill operations */

void wkv_seq(const at::Tensor &state_in, const at::Tensor &state_out, const at::Tensor &r,
             const at::Tensor &w, const at::Tensor &k, const at::Tensor &v, const at::Tensor &a,
             const at::Tensor &b, const at::Tensor &y) {
    TORCH_CHECK(r.dim() == 3, "rwkv7: r must be [B, T, C]");
    const auto device = r.device();
    const auto type = r.scalar_type();
    const auto shape = r.sizes();
    for (auto [t, name] : {std::pair{&r, "r"}, {&k, "k"}, {&v, "v"}, {&a, "a"}, {&b, "b"}}) {
        check_tensor(*t, name, type, device);
        check_shape(*t, name, shape);
    }
    check_tensor(w, "w", at::kFloat, device);
    check_shape(w, "w", shape);
    check_tensor(y, "y", at::kFloat, device);
    check_shape(y, "y", shape);
    const int64_t B = shape[0], T = shape[1], C = shape[2];
    TORCH_CHECK(state_in.dim() == 4, "rwkv7: state must be [B, H, N, N]");
    const int64_t H = state_in.size(1), N = state_in.size(2);
    TORCH_CHECK(H * N == C, "rwkv7: state has ", H, " heads of ", N, " but the inputs have ", C, " channels");
    check_state(state_in, "state_in", B, H, N, device);
    check_state(state_out, "state_out", B, H, N, device);
    TORCH_CHECK(state_in.stride(0) == state_out.stride(0), "rwkv7: state_in and state_out batch strides differ");
    const c10::cuda::CUDAGuard guard(device);
    check_launch(rwkv7_wkv_seq(dtype_code(type), (int)B, (int)T, (int)H, (int)N, f32(state_in),
                               f32_mut(state_out), state_in.stride(0), r.data_ptr(), f32(w), k.data_ptr(),
                               v.data_ptr(), a.data_ptr(), b.data_ptr(), f32_mut(y), current_stream()),
                 "wkv_seq");
}

void mix_rows(const at::Tensor &xn, const at::Tensor &prev, const at::Tensor &mix, const at::Tensor &out,
              const at::Tensor &last) {
    const auto device = xn.device();
    check_tensor(xn, "xn", at::kFloat, device);
    TORCH_CHECK(xn.dim() == 2, "rwkv7: xn must be [T, C]");
    const int64_t T = xn.size(0), C = xn.size(1);
    check_tensor(prev, "prev", at::kFloat, device);
    check_shape(prev, "prev", {C});
    check_tensor(mix, "mix", at::kFloat, device);
    TORCH_CHECK(mix.dim() == 2 && mix.size(1) == C, "rwkv7: mix must be [M, C]");
    const int64_t M = mix.size(0);
    check_tensor(out, "out", out.scalar_type(), device);
    check_shape(out, "out", {M, T, C});
    check_tensor(last, "last", at::kFloat, device);
    check_shape(last, "last", {C});
    const c10::cuda::CUDAGuard guard(device);
    check_launch(rwkv7_mix_rows(dtype_code(out.scalar_type()), (int)T, (int)C, (int)M, f32(xn), f32(prev),
                                f32(mix), out.data_ptr(), f32_mut(last), current_stream()),
                 "mix_rows");
}

void prep_rows(const at::Tensor &k, const at::Tensor &v, const at::Tensor &zraw, const at::Tensor &araw,
               const std::optional<at::Tensor> &vraw, const at::Tensor &w0, const at::Tensor &a0,
               const std::optional<at::Tensor> &v0, const at::Tensor &k_k, const at::Tensor &k_a,
               const at::Tensor &v_first, const at::Tensor &w_out, const at::Tensor &k_out,
               const at::Tensor &v_out, const at::Tensor &a_out, const at::Tensor &b_out, int64_t n_head) {
    TORCH_CHECK(k.dim() == 2, "rwkv7: k must be [T, C]");
    const auto device = k.device();
    const auto type = k.scalar_type();
    const int64_t T = k.size(0), C = k.size(1);
    TORCH_CHECK(n_head > 0 && C % n_head == 0, "rwkv7: ", C, " channels do not split into ", n_head, " heads");
    TORCH_CHECK(vraw.has_value() == v0.has_value(), "rwkv7: vraw and v0 go together");
    for (auto [t, name] : {std::pair{&k, "k"}, {&v, "v"}, {&zraw, "zraw"}, {&araw, "araw"},
                           {&v_first, "v_first"}, {&k_out, "k_out"}, {&v_out, "v_out"},
                           {&a_out, "a_out"}, {&b_out, "b_out"}}) {
        check_tensor(*t, name, type, device);
        check_shape(*t, name, {T, C});
    }
    check_tensor(w_out, "w_out", at::kFloat, device);
    check_shape(w_out, "w_out", {T, C});
    for (auto [t, name] : {std::pair{&w0, "w0"}, {&a0, "a0"}, {&k_k, "k_k"}, {&k_a, "k_a"}}) {
        check_tensor(*t, name, at::kFloat, device);
        check_shape(*t, name, {C});
    }
    if (vraw) {
        check_tensor(*vraw, "vraw", type, device);
        check_shape(*vraw, "vraw", {T, C});
        check_tensor(*v0, "v0", at::kFloat, device);
        check_shape(*v0, "v0", {C});
    }
    rwkv7_prep_rows_args args;
    args.T = (int)T;
    args.H = (int)n_head;
    args.N = (int)(C / n_head);
    args.k = k.data_ptr();
    args.v = v.data_ptr();
    args.zraw = zraw.data_ptr();
    args.araw = araw.data_ptr();
    args.vraw = vraw ? vraw->data_ptr() : nullptr;
    args.w0 = f32(w0);
    args.a0 = f32(a0);
    args.v0 = v0 ? f32(*v0) : nullptr;
    args.k_k = f32(k_k);
    args.k_a = f32(k_a);
    args.v_first = v_first.data_ptr();
    args.w_out = f32_mut(w_out);
    args.k_out = k_out.data_ptr();
    args.v_out = v_out.data_ptr();
    args.a_out = a_out.data_ptr();
    args.b_out = b_out.data_ptr();
    const c10::cuda::CUDAGuard guard(device);
    check_launch(rwkv7_prep_rows(dtype_code(type), &args, current_stream()), "prep_rows");
}

void gate_rows(const at::Tensor &y, const at::Tensor &r, const at::Tensor &k, const at::Tensor &v,
               const at::Tensor &g, const at::Tensor &r_k, const at::Tensor &lnx_w, const at::Tensor &lnx_b,
               const at::Tensor &out, int64_t n_head) {
    TORCH_CHECK(r.dim() == 2, "rwkv7: r must be [T, C]");
    const auto device = r.device();
    const auto type = r.scalar_type();
    const int64_t T = r.size(0), C = r.size(1);
    TORCH_CHECK(n_head > 0 && C % n_head == 0, "rwkv7: ", C, " channels do not split into ", n_head, " heads");
    for (auto [t, name] : {std::pair{&r, "r"}, {&k, "k"}, {&v, "v"}, {&g, "g"}, {&out, "out"}}) {
        check_tensor(*t, name, type, device);
        check_shape(*t, name, {T, C});
    }
    check_tensor(y, "y", at::kFloat, device);
    check_shape(y, "y", {T, C});
    for (auto [t, name] : {std::pair{&r_k, "r_k"}, {&lnx_w, "lnx_w"}, {&lnx_b, "lnx_b"}}) {
        check_tensor(*t, name, at::kFloat, device);
        check_shape(*t, name, {C});
    }
    rwkv7_gate_rows_args args;
    args.T = (int)T;
    args.H = (int)n_head;
    args.N = (int)(C / n_head);
    args.y = f32(y);
    args.r = r.data_ptr();
    args.k = k.data_ptr();
    args.v = v.data_ptr();
    args.g = g.data_ptr();
    args.r_k = f32(r_k);
    args.lnx_w = f32(lnx_w);
    args.lnx_b = f32(lnx_b);
    args.out = out.data_ptr();
    const c10::cuda::CUDAGuard guard(device);
    check_launch(rwkv7_gate_rows(dtype_code(type), &args, current_stream()), "gate_rows");
}

void gemv(const at::Tensor &weight, const at::Tensor &x, const at::Tensor &y) {
    TORCH_CHECK(weight.dim() == 2, "rwkv7: weight must be [rows, K]");
    const auto device = weight.device();
    check_tensor(weight, "weight", weight.scalar_type(), device);
    const int64_t rows = weight.size(0), K = weight.size(1);
    check_tensor(x, "x", at::kFloat, device);
    check_shape(x, "x", {K});
    check_tensor(y, "y", at::kFloat, device);
    check_shape(y, "y", {rows});
    const c10::cuda::CUDAGuard guard(device);
    check_launch(rwkv7_gemv(dtype_code(weight.scalar_type()), (int)rows, (int)K, weight.data_ptr(), f32(x),
                            f32_mut(y), current_stream()),
                 "gemv");
}

/* ---------------------------------------------------------------- batch-1 decoding */

/*
 * Owns everything one decoded token needs besides the state: references to the packed
 * weights, scratch buffers, the device step table and a pinned host copy of it. set_io()
 * fills the table for the next token; step() launches the token's kernels (and is what a
 * CUDA graph captures).
 */
class DecodePlan {
  public:
    DecodePlan(std::vector<int64_t> dims, std::vector<at::Tensor> globals,
               std::vector<std::vector<std::optional<at::Tensor>>> layers)
        : device_(globals.at(0).device()) {
        TORCH_CHECK(dims.size() == 11, "rwkv7: DecodePlan needs 11 dims");
        TORCH_CHECK(globals.size() == 6, "rwkv7: DecodePlan needs 6 global tensors");
        const c10::cuda::CUDAGuard guard(device_);
        plan_ = {};
        const at::ScalarType type = globals[0].scalar_type();
        plan_.dtype = dtype_code(type);
        plan_.n_layer = (int)dims[0];
        plan_.C = (int)dims[1];
        plan_.H = (int)dims[2];
        plan_.N = (int)dims[3];
        plan_.F = (int)dims[4];
        plan_.Dw = (int)dims[5];
        plan_.Da = (int)dims[6];
        plan_.Dg = (int)dims[7];
        plan_.Dv = (int)dims[8];
        plan_.vocab = (int)dims[9];
        plan_.sm_count = (int)dims[10];
        const int64_t C = plan_.C, V = plan_.vocab;
        TORCH_CHECK((int64_t)layers.size() == plan_.n_layer, "rwkv7: expected ", plan_.n_layer, " layers");
        TORCH_CHECK(plan_.N == RWKV7_HEAD_SIZE, "rwkv7: the kernels need head size ", RWKV7_HEAD_SIZE);

        const char *global_names[] = {"emb", "head", "ln0_w", "ln0_b", "ln_out_w", "ln_out_b"};
        for (int i = 0; i < 6; i++) {
            check_tensor(globals[i], global_names[i], i < 2 ? type : at::kFloat, device_);
            keep_.push_back(globals[i]);
        }
        check_shape(globals[0], "emb", {V, C});
        check_shape(globals[1], "head", {V, C});
        plan_.emb = globals[0].data_ptr();
        plan_.head = globals[1].data_ptr();
        plan_.ln0_w = f32(globals[2]);
        plan_.ln0_b = f32(globals[3]);
        plan_.ln_out_w = f32(globals[4]);
        plan_.ln_out_b = f32(globals[5]);

        layers_.resize(layers.size());
        for (size_t l = 0; l < layers.size(); l++) fill_layer(layers_[l], layers[l], (int)l, type);
        plan_.layers = layers_.data();

        const auto f32_options = at::TensorOptions().dtype(at::kFloat).device(device_);
        const int64_t proj = 3 * C + plan_.Dw + plan_.Da + plan_.Dg + plan_.Dv;
        x_ = at::zeros({C}, f32_options);
        mixed_ = at::zeros({6, C}, f32_options);
        proj_ = at::zeros({proj}, f32_options);
        lora_ = at::zeros({4, C}, f32_options);
        v_first_ = at::zeros({C}, f32_options);
        att_y_ = at::zeros({C}, f32_options);
        ffn_h_ = at::zeros({plan_.F}, f32_options);
        partial_ = at::zeros({(int64_t)rwkv7_decode_partial_floats(plan_.C, plan_.F, plan_.sm_count)}, f32_options);
        counters_ = at::zeros({(int64_t)rwkv7_decode_counter_count(plan_.C, plan_.F, plan_.sm_count)},
                              f32_options.dtype(at::kInt));
        logits_ = at::zeros({V}, f32_options);
        io_ = at::zeros({(int64_t)(sizeof(rwkv7_step_io) / sizeof(int64_t))}, f32_options.dtype(at::kLong));
        plan_.x = f32_mut(x_);
        plan_.mixed = f32_mut(mixed_);
        plan_.proj = f32_mut(proj_);
        plan_.lora = f32_mut(lora_);
        plan_.v_first = f32_mut(v_first_);
        plan_.att_y = f32_mut(att_y_);
        plan_.ffn_h = f32_mut(ffn_h_);
        plan_.partial = f32_mut(partial_);
        plan_.counters = reinterpret_cast<unsigned int *>(counters_.data_ptr<int>());
        plan_.logits = f32_mut(logits_);
        plan_.io = reinterpret_cast<const rwkv7_step_io *>(io_.data_ptr<int64_t>());

        check_launch(cudaHostAlloc(reinterpret_cast<void **>(&host_io_), sizeof(rwkv7_step_io), cudaHostAllocDefault),
                     "cudaHostAlloc");
        *host_io_ = {};
        check_launch(cudaEventCreateWithFlags(&copied_, cudaEventDisableTiming), "cudaEventCreate");
    }

    ~DecodePlan() {
        if (copied_) {
            cudaEventSynchronize(copied_);
            cudaEventDestroy(copied_);
        }
        if (host_io_) cudaFreeHost(host_io_);
    }

    DecodePlan(const DecodePlan &) = delete;
    DecodePlan &operator=(const DecodePlan &) = delete;

    void set_io(int64_t token, const at::Tensor &att_x_in, const at::Tensor &att_x_out, const at::Tensor &wkv_in,
                const at::Tensor &wkv_out, const at::Tensor &ffn_x_in, const at::Tensor &ffn_x_out) {
        TORCH_CHECK(token >= 0 && token < plan_.vocab, "rwkv7: token ", token, " is outside the vocabulary");
        const int64_t L = plan_.n_layer, C = plan_.C, H = plan_.H, N = plan_.N;
        for (auto [t, name] : {std::pair{&att_x_in, "att_x_in"}, {&att_x_out, "att_x_out"},
                               {&ffn_x_in, "ffn_x_in"}, {&ffn_x_out, "ffn_x_out"}}) {
            check_tensor(*t, name, at::kFloat, device_);
            check_shape(*t, name, {L, C});
        }
        for (auto [t, name] : {std::pair{&wkv_in, "wkv_in"}, {&wkv_out, "wkv_out"}}) {
            check_tensor(*t, name, at::kFloat, device_);
            check_shape(*t, name, {L, H, N, N});
        }
        const c10::cuda::CUDAGuard guard(device_);
        /* The previous token's copy must have left the pinned buffer before it is rewritten. */
        check_launch(cudaEventSynchronize(copied_), "cudaEventSynchronize");
        host_io_->token = token;
        host_io_->att_x_in = reinterpret_cast<long long>(att_x_in.data_ptr());
        host_io_->att_x_out = reinterpret_cast<long long>(att_x_out.data_ptr());
        host_io_->wkv_in = reinterpret_cast<long long>(wkv_in.data_ptr());
        host_io_->wkv_out = reinterpret_cast<long long>(wkv_out.data_ptr());
        host_io_->ffn_x_in = reinterpret_cast<long long>(ffn_x_in.data_ptr());
        host_io_->ffn_x_out = reinterpret_cast<long long>(ffn_x_out.data_ptr());
        const cudaStream_t stream = current_stream();
        check_launch(cudaMemcpyAsync(io_.data_ptr(), host_io_, sizeof(rwkv7_step_io), cudaMemcpyHostToDevice, stream),
                     "step table copy");
        check_launch(cudaEventRecord(copied_, stream), "cudaEventRecord");
    }

    void step() {
        const c10::cuda::CUDAGuard guard(device_);
        check_launch(rwkv7_decode_step(&plan_, current_stream()), "decode_step");
    }

    at::Tensor logits() const { return logits_; }

  private:
    void fill_layer(rwkv7_layer &out, const std::vector<std::optional<at::Tensor>> &t, int layer, at::ScalarType type) {
        TORCH_CHECK(t.size() == 22, "rwkv7: layer ", layer, " needs 22 tensors, got ", t.size());
        const int64_t C = plan_.C, F = plan_.F;
        const bool residual = layer > 0;
        const int64_t rows = 3 * C + plan_.Dw + plan_.Da + plan_.Dg + (residual ? plan_.Dv : 0);
        auto matrix = [&](int i, const char *name, std::initializer_list<int64_t> shape) -> const void * {
            TORCH_CHECK(t[i].has_value(), "rwkv7: layer ", layer, " ", name, " is missing");
            check_tensor(*t[i], name, type, device_);
            check_shape(*t[i], name, shape);
            keep_.push_back(*t[i]);
            return t[i]->data_ptr();
        };
        auto vec = [&](int i, const char *name, std::initializer_list<int64_t> shape) -> const float * {
            TORCH_CHECK(t[i].has_value(), "rwkv7: layer ", layer, " ", name, " is missing");
            check_tensor(*t[i], name, at::kFloat, device_);
            check_shape(*t[i], name, shape);
            keep_.push_back(*t[i]);
            return f32(*t[i]);
        };
        out.att_in = matrix(0, "att_in", {rows, C});
        out.w2t = matrix(1, "w2t", {C, plan_.Dw});
        out.a2t = matrix(2, "a2t", {C, plan_.Da});
        out.g2t = matrix(3, "g2t", {C, plan_.Dg});
        out.v2t = residual ? matrix(4, "v2t", {C, plan_.Dv}) : nullptr;
        out.att_out = matrix(5, "att_out", {C, C});
        out.ffn_key = matrix(6, "ffn_key", {F, C});
        out.ffn_value_t = matrix(7, "ffn_value_t", {F, C});
        out.ln1_w = vec(8, "ln1_w", {C});
        out.ln1_b = vec(9, "ln1_b", {C});
        out.ln2_w = vec(10, "ln2_w", {C});
        out.ln2_b = vec(11, "ln2_b", {C});
        out.att_mix = vec(12, "att_mix", {6, C});
        out.w0 = vec(13, "w0", {C});
        out.a0 = vec(14, "a0", {C});
        out.v0 = residual ? vec(15, "v0", {C}) : nullptr;
        out.k_k = vec(16, "k_k", {C});
        out.k_a = vec(17, "k_a", {C});
        out.r_k = vec(18, "r_k", {C});
        out.lnx_w = vec(19, "lnx_w", {C});
        out.lnx_b = vec(20, "lnx_b", {C});
        out.ffn_mix = vec(21, "ffn_mix", {C});
    }

    at::Device device_;
    rwkv7_decode_plan plan_;
    std::vector<rwkv7_layer> layers_;
    std::vector<at::Tensor> keep_;
    at::Tensor x_, mixed_, proj_, lora_, v_first_, att_y_, ffn_h_, partial_, counters_, logits_, io_;
    rwkv7_step_io *host_io_ = nullptr;
    cudaEvent_t copied_ = nullptr;
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "rwkv-tui RWKV-7 CUDA kernels";
    m.attr("head_size") = RWKV7_HEAD_SIZE;
    m.def("wkv_seq", &wkv_seq, "WKV-7 recurrence over [B, T, C] inputs (state_in -> state_out)");
    m.def("mix_rows", &mix_rows, "token-shift mixes of a prefill chunk");
    m.def("prep_rows", &prep_rows, "time-mix preparation (decay, kk, key rescale, value residual)");
    m.def("gate_rows", &gate_rows, "GroupNorm + bonus + gate");
    m.def("gemv", &gemv, "y = weight @ x (fp32 x and y)");
    pybind11::class_<DecodePlan>(m, "DecodePlan")
        .def(pybind11::init<std::vector<int64_t>, std::vector<at::Tensor>,
                            std::vector<std::vector<std::optional<at::Tensor>>>>())
        .def("set_io", &DecodePlan::set_io)
        .def("step", &DecodePlan::step)
        .def_property_readonly("logits", &DecodePlan::logits);
}
