"""Small programs written the way public PyTorch code writes them, over this session's new API
(nn.utils.rnn packing, nn.CTCLoss, tj.distributions, tj.linalg, optim.LBFGS), each built once
against a `lib` (torch or tracejit; the code is the same text) and run on both from one
state_dict and the same inputs in float64: loss, every parameter's gradient, and a few optimizer
steps, eagerly and as one tj.compile'd training step where the program compiles.

1. A bidirectional-LSTM tagger (embedding, pad_sequence, pack_padded_sequence with
   enforce_sorted=False, pad_packed_sequence, cross_entropy with ignore_index) and a GRU
   recogniser over the same packed batch trained with nn.CTCLoss.
2. An actor-critic step (Categorical(logits=...), log_prob, entropy; torch draws the actions and
   both libraries get the same ones) and a VAE loss (Normal posterior with a fixed eps for
   rsample's noise, Bernoulli likelihood, kl_divergence(Normal, Normal)).
3. A Gaussian-process negative log marginal likelihood (cholesky, cholesky_solve,
   solve_triangular, logdet and MultivariateNormal.log_prob) fitted by Adam and by LBFGS."""
import functools
import math

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
TIGHT = dict(rtol=1e-9, atol=1e-11)


def _same_weights(state, model):
    """Load torch's initial weights (a snapshot of its state_dict as arrays)."""
    model.load_state_dict({k: v.copy() for k, v in state.items()})


def _grads(lib, model):
    return {k: p.grad.numpy().copy() for k, p in model.named_parameters()}


def _state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _assert_same(got: dict, want: dict, what: str):
    assert sorted(got) == sorted(want), what
    for k in want:
        np.testing.assert_allclose(got[k], want[k], err_msg=f"{what}: {k}", **TIGHT)


# -- 1. packed sequences: a tagger and a CTC recogniser ------------------------------------------
VOCAB, EMB, HID, NTAGS, NCHARS = 12, 6, 5, 4, 5
PAD_IDX, IGNORE = 0, -100


def make_seq_models(lib):
    nn, F = lib.nn, lib.nn.functional
    from_rnn = lib.nn.utils.rnn

    class BiLSTMTagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=PAD_IDX)
            self.lstm = nn.LSTM(EMB, HID, batch_first=True, bidirectional=True)
            self.hidden2tag = nn.Linear(2 * HID, NTAGS)

        def forward(self, text, lengths):
            embedded = self.embedding(text)
            packed = from_rnn.pack_padded_sequence(embedded, lengths, batch_first=True,
                                                   enforce_sorted=False)
            packed_out, (hidden, cell) = self.lstm(packed)
            out, _ = from_rnn.pad_packed_sequence(packed_out, batch_first=True,
                                                  total_length=text.shape[1])
            return self.hidden2tag(out)

    class GRURecogniser(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=PAD_IDX)
            self.gru = nn.GRU(EMB, HID, num_layers=2)
            self.fc = nn.Linear(HID, NCHARS)
            self.classifier = nn.Linear(HID, 2)      # a sentence label from the last state

        def forward(self, text, lengths):          # text: (T, N), time first
            packed = from_rnn.pack_padded_sequence(self.embedding(text), lengths,
                                                   enforce_sorted=False)
            out, h_n = self.gru(packed)
            out, out_lengths = from_rnn.pad_packed_sequence(out)
            return F.log_softmax(self.fc(out), dim=2), out_lengths, self.classifier(h_n[-1])

    def tagger_loss(model, text, tags, lengths):
        logits = model(text, lengths)
        return F.cross_entropy(logits.view(-1, NTAGS), tags.view(-1), ignore_index=IGNORE)

    ctc = nn.CTCLoss(blank=0, zero_infinity=True)

    def ctc_loss(model, text, targets, lengths, target_lengths, labels):
        log_probs, out_lengths, sentence_logits = model(text, lengths)
        return ctc(log_probs, targets, out_lengths, target_lengths) \
            + F.cross_entropy(sentence_logits, labels)

    return BiLSTMTagger, GRURecogniser, tagger_loss, ctc_loss


def _sentences(rng):
    lengths = [3, 1, 4, 2]                         # unsorted, as a data loader gives them
    words = [rng.integers(1, VOCAB, n) for n in lengths]
    tags = [rng.integers(0, NTAGS, n) for n in lengths]
    chars = [rng.integers(1, NCHARS, m) for m in (2, 1, 2, 1)]
    return lengths, words, tags, chars


def _seq_batch(lib, rng_seed=0):
    """What a collate_fn returns: padded word ids and tags (batch first), time-first ids for the
    recogniser, padded CTC targets, and lengths."""
    lengths, words, tags, chars = _sentences(np.random.default_rng(rng_seed))
    pad = lib.nn.utils.rnn.pad_sequence
    text = pad([lib.tensor(w) for w in words], batch_first=True, padding_value=PAD_IDX)
    tag = pad([lib.tensor(t) for t in tags], batch_first=True, padding_value=IGNORE)
    text_tf = pad([lib.tensor(w) for w in words])
    targets = pad([lib.tensor(c) for c in chars], batch_first=True)   # (N, S), as CTC takes
    target_lengths = lib.tensor([len(c) for c in chars])
    labels = lib.tensor([0, 1, 1, 0])
    return text, tag, text_tf, targets, lengths, target_lengths, labels


@functools.cache
def _torch_run(run, *args):
    """torch's side of a comparison, once per test session (it is the same in every case)."""
    return run(torch, *args)


def _seq_run(lib, compiled: bool, tmodels=None, steps: int = 3):
    BiLSTMTagger, GRURecogniser, tagger_loss, ctc_loss = make_seq_models(lib)
    if lib is torch:
        torch.manual_seed(0)
    tagger, recog = BiLSTMTagger().double(), GRURecogniser().double()
    if tmodels is not None:
        _same_weights(tmodels[0], tagger)
        _same_weights(tmodels[1], recog)
    initial = (_state(tagger), _state(recog))
    text, tag, text_tf, targets, lengths, target_lengths, labels = _seq_batch(lib)
    params = list(tagger.parameters()) + list(recog.parameters())
    opt = lib.optim.Adam(params, lr=0.05)

    def step(text, tag, text_tf, targets, target_lengths, labels, lengths):
        loss = tagger_loss(tagger, text, tag, lengths) \
            + ctc_loss(recog, text_tf, targets, lengths, target_lengths, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss
    if compiled:      # lengths decide the packing: a static argument, hashable (a tuple)
        step, lengths = tj.compile(step, static_argnums=6), tuple(lengths)
    losses, first_grads = [], None
    for i in range(steps):
        losses.append(step(text, tag, text_tf, targets, target_lengths, labels, lengths).item())
        if i == 0:
            first_grads = {**{"tagger." + k: v for k, v in _grads(lib, tagger).items()},
                           **{"recog." + k: v for k, v in _grads(lib, recog).items()}}
    return initial, losses, first_grads, {**_state(tagger), **{
        "recog." + k: v for k, v in _state(recog).items()}}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled_step"])
def test_packed_tagger_and_ctc_recogniser_train_as_torch(compiled):
    tmodels, want_losses, want_grads, want_state = _torch_run(_seq_run, False)
    _, losses, grads, state = _seq_run(tj, compiled, tmodels)
    np.testing.assert_allclose(losses, want_losses, **TIGHT)
    assert want_losses[-1] < want_losses[0]
    _assert_same(grads, want_grads, "first step's gradient")
    # the padding row of both embeddings gets no gradient, as torch
    assert not grads["tagger.embedding.weight"][PAD_IDX].any()
    _assert_same(state, want_state, "after 3 Adam steps")


# -- 2. actor-critic and a VAE loss with torch.distributions ---------------------------------------
OBS, ACTIONS, GAMMA, LATENT, PIX = 4, 3, 0.99, 2, 6


def make_policy(lib):
    nn, F = lib.nn, lib.nn.functional
    Categorical = lib.distributions.Categorical

    class Policy(nn.Module):                      # pytorch/examples reinforcement_learning
        def __init__(self):
            super().__init__()
            self.affine1 = nn.Linear(OBS, 16)
            self.action_head = nn.Linear(16, ACTIONS)
            self.value_head = nn.Linear(16, 1)

        def forward(self, x):
            x = F.relu(self.affine1(x))
            return self.action_head(x), self.value_head(x)

    def finish_episode(model, states, actions, rewards):
        R, returns = 0.0, []
        for r in rewards[::-1]:                   # the episode's rewards: Python floats
            R = r + GAMMA * R
            returns.insert(0, R)
        returns = lib.tensor(returns, dtype=states.dtype)
        returns = (returns - returns.mean()) / (returns.std() + 1e-8)
        logits, values = model(states)
        m = Categorical(logits=logits)
        log_probs = m.log_prob(actions)
        advantage = returns - values.squeeze(-1).detach()
        policy_loss = -(log_probs * advantage).sum()
        value_loss = F.smooth_l1_loss(values.squeeze(-1), returns)
        return policy_loss + value_loss - 0.01 * m.entropy().mean()

    return Policy, finish_episode


def make_vae(lib):
    nn, F, D = lib.nn, lib.nn.functional, lib.distributions

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(PIX, 8)
            self.mu = nn.Linear(8, LATENT)
            self.logvar = nn.Linear(8, LATENT)
            self.dec = nn.Sequential(nn.Linear(LATENT, 8), nn.Tanh(), nn.Linear(8, PIX))

        def forward(self, x, eps):
            h = F.relu(self.enc(x))
            q = D.Normal(self.mu(h), lib.exp(0.5 * self.logvar(h)))
            z = q.loc + q.scale * eps                # q.rsample() with fixed noise
            return q, self.dec(z)

    def elbo_loss(model, x, eps):
        q, logits = model(x, eps)
        prior = D.Normal(lib.zeros_like(q.loc), lib.ones_like(q.scale))
        recon = D.Bernoulli(logits=logits).log_prob(x).sum(-1)
        kl = D.kl_divergence(q, prior).sum(-1)
        return (kl - recon).mean()

    return VAE, elbo_loss


def _rl_data():
    rng = np.random.default_rng(3)
    states = rng.standard_normal((7, OBS))
    x = (rng.uniform(size=(5, PIX)) > 0.5).astype(np.float64)
    eps = rng.standard_normal((5, LATENT))
    return states, rng.uniform(-1, 1, 7), x, eps


def _rl_run(lib, compiled: bool, tmodels=None, actions=None, steps: int = 3):
    Policy, finish_episode = make_policy(lib)
    VAE, elbo_loss = make_vae(lib)
    if lib is torch:
        torch.manual_seed(1)
    policy, vae = Policy().double(), VAE().double()
    if tmodels is not None:
        _same_weights(tmodels[0], policy)
        _same_weights(tmodels[1], vae)
    initial = (_state(policy), _state(vae))
    s, r, x, e = _rl_data()
    states, x, eps = (lib.tensor(a) for a in (s, x, e))
    rewards = tuple(r.tolist())
    if actions is None:                           # torch samples the episode's actions
        with torch.no_grad():
            actions = torch.distributions.Categorical(logits=policy(states)[0]).sample()
    actions = lib.tensor(np.asarray(actions))
    opt = lib.optim.Adam(list(policy.parameters()) + list(vae.parameters()), lr=1e-2)

    def step(states, actions, rewards, x, eps):
        opt.zero_grad()
        loss = finish_episode(policy, states, actions, rewards) + elbo_loss(vae, x, eps)
        loss.backward()
        opt.step()
        return loss
    if compiled:
        step = tj.compile(step, static_argnums=2)
    losses, first = [], None
    for i in range(steps):
        losses.append(step(states, actions, rewards, x, eps).item())
        if i == 0:
            first = {**{"policy." + k: v for k, v in _grads(lib, policy).items()},
                     **{"vae." + k: v for k, v in _grads(lib, vae).items()}}
    state = {**{"policy." + k: v for k, v in _state(policy).items()},
             **{"vae." + k: v for k, v in _state(vae).items()}}
    return initial, actions.numpy(), losses, first, state


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled_step"])
def test_actor_critic_and_vae_elbo_train_as_torch(compiled):
    tmodels, actions, want_losses, want_grads, want_state = _torch_run(_rl_run, False)
    _, _, losses, grads, state = _rl_run(tj, compiled, tmodels, actions)
    np.testing.assert_allclose(losses, want_losses, **TIGHT)
    _assert_same(grads, want_grads, "first step's gradient")
    _assert_same(state, want_state, "after 3 Adam steps")


# -- 3. Gaussian-process marginal likelihood ----------------------------------------------------
def make_gp(lib):
    nn = lib.nn

    class ExactGP(nn.Module):
        def __init__(self):
            super().__init__()
            self.log_lengthscale = nn.Parameter(lib.tensor(0.3, dtype=lib.float64))
            self.log_outputscale = nn.Parameter(lib.tensor(-0.2, dtype=lib.float64))
            self.log_noise = nn.Parameter(lib.tensor(-1.0, dtype=lib.float64))

        def kernel(self, x1, x2):
            d2 = (x1.unsqueeze(1) - x2.unsqueeze(0)).pow(2).sum(-1)
            return self.log_outputscale.exp() * lib.exp(-0.5 * d2 / self.log_lengthscale.exp() ** 2)

        def forward(self, x, y):
            n = x.shape[0]
            K = self.kernel(x, x) + self.log_noise.exp() * lib.eye(n, dtype=x.dtype)
            L = lib.linalg.cholesky(K)
            alpha = lib.cholesky_solve(y.unsqueeze(-1), L)
            nll = 0.5 * (y.unsqueeze(-1) * alpha).sum() + lib.log(lib.diagonal(L)).sum() \
                + 0.5 * n * math.log(2 * math.pi)
            # the same quantity two more ways, as people write it
            v = lib.linalg.solve_triangular(L, y.unsqueeze(-1), upper=False)
            nll2 = 0.5 * (v ** 2).sum() + 0.5 * lib.logdet(K) + 0.5 * n * math.log(2 * math.pi)
            mvn = lib.distributions.MultivariateNormal(lib.zeros(n, dtype=x.dtype),
                                                       covariance_matrix=K)
            return (nll + nll2 - mvn.log_prob(y)) / 3

    return ExactGP


def _gp_data(lib):
    rng = np.random.default_rng(5)
    x = rng.uniform(-2, 2, (9, 2))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] + 0.1 * rng.standard_normal(9)
    return lib.tensor(x), lib.tensor(y)


def _gp_run(lib, how: str, steps: int = 4):
    gp = make_gp(lib)()
    x, y = _gp_data(lib)
    losses = []
    if how == "lbfgs":
        opt = lib.optim.LBFGS(gp.parameters(), lr=0.5, max_iter=5, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = gp(x, y)
            loss.backward()
            return loss
        for _ in range(steps):
            losses.append(opt.step(closure).item())
    else:
        opt = lib.optim.Adam(gp.parameters(), lr=0.1)

        def step(x, y):
            opt.zero_grad()
            loss = gp(x, y)
            loss.backward()
            opt.step()
            return loss
        if how == "compiled":
            step = tj.compile(step)
        losses = [step(x, y).item()]
        first = _grads(lib, gp)      # Adam's first step is lr * sign(g): check g itself
        losses += [step(x, y).item() for _ in range(steps - 1)]
        return losses, first, _state(gp)
    return losses, None, _state(gp)


@pytest.mark.parametrize("how", ["eager", "compiled", "lbfgs"])
def test_gp_marginal_likelihood_fits_as_torch(how):
    want_losses, want_grads, want_state = _torch_run(_gp_run,
                                                     "eager" if how == "compiled" else how)
    losses, grads, state = _gp_run(tj, how)
    if want_grads is not None:
        _assert_same(grads, want_grads, "first step's gradient")
    np.testing.assert_allclose(losses, want_losses, rtol=1e-9, atol=1e-10)
    assert want_losses[-1] < want_losses[0]
    _assert_same(state, want_state, f"GP hyperparameters after {how}")
