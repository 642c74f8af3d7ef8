// A llama.cpp contender for benchmarks/bench_llamacpp.py, driven over stdin like
// benchmarks/contender.py drives ours: one command per line, one JSON answer per line.
//
//   decode N t1 … tN     prefill t1..t4, 4 warm-up steps, then time one token per call
//   prefill N t1 … tN    time the N tokens in one llama_decode call (logits of the last only)
//   logits N t1 … tN P   write the last token's logits (float32, raw) to path P
//   steps N t1 … tN P    feed the tokens one at a time; write every step's logits (N × vocab) to P
//   bandwidth MB         bytes/s that THREADS threads read from memory (best of 5 passes)
//   quit
//
// Build: g++ -O2 -std=c++17 llamacpp_driver.cpp -I<llama.cpp>/include -I<llama.cpp>/ggml/include
//        -L<build>/bin -lllama -Wl,-rpath,<build>/bin
// Usage: llamacpp_driver MODEL.gguf THREADS
#include "llama.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static void fail(const char *what) {
    std::printf("{\"error\": \"%s\"}\n", what);
    std::fflush(stdout);
}

// The machine's read bandwidth: each thread sums its share of a buffer far larger than caches.
static double read_bandwidth(size_t megabytes, int threads) {
    const size_t words = megabytes * (1u << 20) / sizeof(uint64_t);
    std::vector<uint64_t> data(words, 1);
    std::vector<uint64_t> sums(threads, 0);
    double best = 0.0;
    for (int pass = 0; pass < 6; pass++) {
        std::vector<std::thread> team;
        const double start = now();
        for (int t = 0; t < threads; t++) {
            team.emplace_back([&, t] {
                const size_t begin = words / threads * t, end = t + 1 == threads ? words : begin + words / threads;
                uint64_t a = 0, b = 0, c = 0, d = 0;
                for (size_t i = begin; i + 4 <= end; i += 4) {
                    a += data[i];
                    b += data[i + 1];
                    c += data[i + 2];
                    d += data[i + 3];
                }
                sums[t] = a + b + c + d;
            });
        }
        for (auto &thread : team) thread.join();
        const double rate = (double)(words * sizeof(uint64_t)) / (now() - start);
        if (pass > 0 && rate > best) best = rate; // the first pass pages the buffer in
    }
    return best;
}

static bool run(llama_context *ctx, std::vector<llama_token> &tokens, size_t begin, size_t count) {
    llama_batch batch = llama_batch_get_one(tokens.data() + begin, (int32_t)count);
    if (llama_decode(ctx, batch) != 0) return false;
    return llama_get_logits_ith(ctx, -1) != nullptr;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s MODEL.gguf THREADS\n", argv[0]);
        return 2;
    }
    const int threads = std::atoi(argv[2]);
    llama_backend_init();
    llama_model_params mparams = llama_model_default_params();
    mparams.n_gpu_layers = 0;
    llama_model *model = llama_model_load_from_file(argv[1], mparams);
    if (!model) {
        fail("cannot load model");
        return 1;
    }
    llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = 4096;
    cparams.n_batch = 2048;
    cparams.n_ubatch = 2048;
    cparams.n_threads = threads;
    cparams.n_threads_batch = threads;
    cparams.no_perf = true;
    llama_context *ctx = llama_init_from_model(model, cparams);
    if (!ctx) {
        fail("cannot create context");
        return 1;
    }
    const int32_t vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    std::printf("{\"vocab\": %d, \"threads\": %d}\n", vocab, threads);
    std::fflush(stdout);

    std::string line;
    while (std::getline(std::cin, line)) {
        std::istringstream in(line);
        std::string op;
        size_t n = 0;
        in >> op;
        if (op == "quit") {
            std::printf("{\"ok\": true}\n");
            std::fflush(stdout);
            break;
        }
        in >> n;
        if (op == "bandwidth") {
            std::printf("{\"bytes_s\": %.1f}\n", read_bandwidth(n, threads));
            std::fflush(stdout);
            continue;
        }
        std::vector<llama_token> tokens(n);
        for (size_t i = 0; i < n; i++) in >> tokens[i];
        llama_memory_clear(llama_get_memory(ctx), true);
        if (op == "decode") {
            if (n < 9 || !run(ctx, tokens, 0, 4)) { fail("decode failed"); continue; }
            bool ok = true;
            for (size_t i = 4; i < 8 && ok; i++) ok = run(ctx, tokens, i, 1);
            const double start = now();
            for (size_t i = 8; i < n && ok; i++) ok = run(ctx, tokens, i, 1);
            const double seconds = now() - start;
            if (!ok) { fail("decode failed"); continue; }
            std::printf("{\"tok_s\": %.6f}\n", (double)(n - 8) / seconds);
        } else if (op == "prefill") {
            const double start = now();
            if (!run(ctx, tokens, 0, n)) { fail("prefill failed"); continue; }
            std::printf("{\"tok_s\": %.6f}\n", (double)n / (now() - start));
        } else if (op == "logits") {
            std::string path;
            in >> path;
            if (!run(ctx, tokens, 0, n)) { fail("logits failed"); continue; }
            FILE *out = std::fopen(path.c_str(), "wb");
            if (!out) { fail("cannot write logits"); continue; }
            std::fwrite(llama_get_logits_ith(ctx, -1), sizeof(float), (size_t)vocab, out);
            std::fclose(out);
            std::printf("{\"ok\": true}\n");
        } else if (op == "steps") {
            std::string path;
            in >> path;
            FILE *out = std::fopen(path.c_str(), "wb");
            if (!out) { fail("cannot write logits"); continue; }
            bool ok = true;
            for (size_t i = 0; i < n && ok; i++) {
                ok = run(ctx, tokens, i, 1);
                if (ok) std::fwrite(llama_get_logits_ith(ctx, -1), sizeof(float), (size_t)vocab, out);
            }
            std::fclose(out);
            if (!ok) { fail("steps failed"); continue; }
            std::printf("{\"ok\": true}\n");
        } else {
            fail("unknown op");
            continue;
        }
        std::fflush(stdout);
    }
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
