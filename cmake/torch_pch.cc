// The translation unit of attune_torch_pch, the target that compiles the
// tree's one <torch/torch.h> precompiled header (NOTE [torch precompiled
// header] in cmake/AttuneHelpers.cmake). It holds no code.
