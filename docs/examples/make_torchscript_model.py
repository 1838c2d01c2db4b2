"""Build a `torchscript` submission: a small MLP saved with torch.jit.script + torch.jit.save.

    python docs/examples/make_torchscript_model.py model.pt [--seed 0]

The runner calls torch.jit.load(path, map_location="cpu"), puts the module in eval mode and calls
it under torch.inference_mode() on a float32 tensor (n_rows, 30). The module itself returns class
probabilities (softmax, 2 columns), not logits. Everything it needs, the standardization
included, lives inside the module as parameters or buffers.
"""

import torch
from _common import load_split, parse_args, report  # the helper next to this script
from torch import nn


class MLP(nn.Module):
    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, hidden: int = 32):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)
        self.net = nn.Sequential(nn.Linear(mean.numel(), hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


args = parse_args("Train and save a TorchScript baseline.", (".pt",))
torch.manual_seed(args.seed)
X_train, y_train, X_test, y_test = load_split()
x, y = torch.from_numpy(X_train), torch.from_numpy(y_train).long()

model = MLP(x.mean(dim=0), x.std(dim=0).clamp_min(1e-6))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
for _ in range(300):  # full-batch training: 455 rows
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model.logits(x), y)
    loss.backward()
    optimizer.step()

model.eval()
with torch.no_grad():
    predicted = model(torch.from_numpy(X_test)).argmax(dim=1).numpy()
print(f"held-out accuracy: {(predicted == y_test).mean():.4f}")

torch.jit.save(torch.jit.script(model), str(args.out))
report(args.out)
