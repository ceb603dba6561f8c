"""A plain torch implementation of VampNet's generate step (upstream's code path,
docs/model.md §3.2): the baseline the ops and the generation graph are measured against."""

from __future__ import annotations

import math

import torch

V = 1024


def sample(logits, temperature: float, top_p: float, generator):
    """Upstream's sample_from_logits: top-p on the unscaled logits, softmax, multinomial.
    logits [..., V] -> (tokens [...], probability of each token [...])."""
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = False
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    probs = (logits / temperature).softmax(dim=-1)
    tokens = probs.reshape(-1, V).multinomial(1, generator=generator)
    tokens = tokens.reshape(*probs.shape[:-1], 1)
    return tokens.squeeze(-1), probs.gather(-1, tokens).squeeze(-1)


def mask_git_step(logits, codes, mask, step, n_steps, n0, settings, generator):
    """One step on logits [B, T, P, V], codes int64 / mask bool [B, P, T] (predicted codebooks),
    n0 [B]: returns (codes, mask, model_input) like the MaskGitStep op."""
    batch, frames, predicted, _ = logits.shape
    flat_codes = codes.transpose(1, 2).reshape(batch, -1)
    flat_mask = mask.transpose(1, 2).reshape(batch, -1)
    tokens, probs = sample(
        logits.reshape(batch, frames * predicted, V),
        settings["temperature"],
        settings["top_p"],
        generator,
    )
    tokens = torch.where(flat_mask, tokens, flat_codes)
    probs = torch.where(flat_mask, probs, torch.tensor(float("inf")))
    r = torch.tensor((step + 1) / n_steps)
    gamma = (r * math.pi / 2).cos().clamp(1e-10, 1.0)
    k = torch.floor(gamma * n0.float()).long().unsqueeze(1)
    if step != n_steps - 1:
        k = torch.clamp(torch.minimum(flat_mask.sum(-1, keepdim=True) - 1, k), min=1)
    uniform = torch.rand(probs.shape, generator=generator, device=probs.device)
    noise = -torch.log(-torch.log(uniform.clamp(1e-20)))
    confidence = torch.log(probs) + settings["mask_temperature"] * (1 - r) * noise
    cut = torch.take_along_dim(confidence.sort(dim=-1).values, k, dim=-1)
    new_mask = confidence < cut

    def unflatten(x):
        return x.reshape(batch, frames, predicted).transpose(1, 2)

    model_input = torch.where(new_mask, V, tokens)
    return unflatten(tokens), unflatten(new_mask), unflatten(model_input)


def generate(model, codes, mask, n_steps, n_conditioning, settings, generator):
    """VampNet's generate loop in torch around `model` (codes [B, C, T] -> logits [B, T, P, V])."""
    ncc = n_conditioning
    n0 = mask.sum(dim=(1, 2))
    model_input = torch.where(mask, V, codes)
    codes, mask = codes.clone(), mask.clone()
    for step in range(n_steps):
        logits = model(model_input)
        fine_codes, fine_mask, fine_input = mask_git_step(
            logits, codes[:, ncc:], mask[:, ncc:], step, n_steps, n0, settings, generator
        )
        codes[:, ncc:], mask[:, ncc:] = fine_codes, fine_mask
        model_input = torch.cat([codes[:, :ncc], fine_input], dim=1)
    return codes
