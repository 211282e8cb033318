"""Value heads for the two agents: separate, shared, or partially shared (MAPPO-inspired, the default).

Each agent's value is read from the last hidden state of its own policy forward pass (its LoRA adapter on):

- ``separate``: each agent has its own trunk and output layer;
- ``shared``: one trunk and one output layer for both (a centralised critic);
- ``partial``: one shared trunk, an agent-specific output layer — the paper's choice, which lets the critic
  learn features common to the game while each agent keeps its own value scale.

>>> import torch
>>> heads = ValueHeads(hidden_size=8, strategy="partial")
>>> heads(torch.randn(2, 5, 8), "sentinel").shape
torch.Size([2, 5])
>>> sorted(name.split(".")[0] for name, _ in heads.named_parameters())
['outputs', 'outputs', 'outputs', 'outputs', 'trunks', 'trunks']
"""

from __future__ import annotations

import torch
from torch import nn

AGENTS = ("red_team", "sentinel")
STRATEGIES = ("separate", "shared", "partial")


class ValueHeads(nn.Module):
    def __init__(self, hidden_size: int, strategy: str = "partial", head_size: int = 128):
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"value_head_strategy={strategy!r}; choose one of {STRATEGIES}.")
        self.strategy = strategy

        def trunk():
            return nn.Sequential(nn.Linear(hidden_size, head_size), nn.Tanh())

        def output():
            layer = nn.Linear(head_size, 1)
            nn.init.zeros_(layer.weight)  # start from V = 0: no value bias before any return is seen
            nn.init.zeros_(layer.bias)
            return layer

        trunk_names = AGENTS if strategy == "separate" else ("shared",)
        output_names = ("shared",) if strategy == "shared" else AGENTS
        self.trunks = nn.ModuleDict({name: trunk() for name in trunk_names})
        self.outputs = nn.ModuleDict({name: output() for name in output_names})

    def forward(self, hidden_states: torch.Tensor, agent: str) -> torch.Tensor:
        if agent not in AGENTS:
            raise ValueError(f"Unknown agent {agent!r}; expected one of {AGENTS}.")
        trunk = self.trunks[agent if self.strategy == "separate" else "shared"]
        output = self.outputs["shared" if self.strategy == "shared" else agent]
        return output(trunk(hidden_states.float())).squeeze(-1)
