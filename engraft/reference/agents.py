"""The cells of the Mesa reference model, one agent class per cell kind.

Each agent's :meth:`step` is one cell's life over one time step, written to be
read next to ``docs/model.md`` (section 4). An agent sits on a
Mesa grid cell (``agent.cell``) while it is in the marrow, and has
``cell is None`` while it circulates in the blood; the blood itself is
resolved by the model after the sweep (:meth:`ReferenceModel.resolve_blood`).

Which event happens in a step comes from :mod:`engraft.rates` through
:meth:`ReferenceModel.draw_event` (competing risks), so both engines share
the rate -> probability conversion and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mesa.discrete_space import CellAgent

from engraft import rates

if TYPE_CHECKING:
    from mesa.discrete_space import Cell

    from engraft.reference.model import ReferenceModel


class MarrowCell(CellAgent):
    """What every cell carries: its type, origin and transgene (model section 3).

    Parameters
    ----------
    model : the reference model.
    type_index : index of the cell type in ``exp.type_names``.
    graft : True for a cell of the infused product (and its progeny).
    vcn : vector copies (0: not transduced).
    clone_id : 0 for host cells; graft clones are numbered from 1.
    silenced : True once the transgene has been silenced.
    """

    model: ReferenceModel

    def __init__(self, model: ReferenceModel, type_index: int, *, graft: bool = False, vcn: int = 0,
                 clone_id: int = 0, silenced: bool = False) -> None:
        super().__init__(model)
        self.type_index = type_index
        self.graft = graft
        self.vcn = vcn
        self.clone_id = clone_id
        self.silenced = silenced
        self.alive = True

    # -- what the cell is -----------------------------------------------------------
    @property
    def in_blood(self) -> bool:
        return self.cell is None

    @property
    def transgene_state(self) -> int:
        """TG_NONE, TG_EXPRESSING or TG_SILENCED (:mod:`engraft.rates`)."""
        if self.vcn == 0:
            return rates.TG_NONE
        return rates.TG_SILENCED if self.silenced else rates.TG_EXPRESSING

    def inherited(self) -> dict:
        """What a daughter takes from its mother: origin, vector copies, clone, silencing."""
        return {"graft": self.graft, "vcn": self.vcn, "clone_id": self.clone_id, "silenced": self.silenced}

    # -- moving between marrow and blood ------------------------------------------------
    def settle(self, site: Cell) -> None:
        """Occupy an empty marrow site."""
        self.cell = site

    def enter_blood(self) -> None:
        """Leave the marrow (or be born) into the circulating pool."""
        self.cell = None
        self.model.blood.append(self)

    def die(self) -> None:
        self.alive = False
        self.remove()

    def _skip(self) -> bool:
        """Cells in the blood are resolved by the model after the sweep; removed cells do nothing."""
        return not self.alive or self.in_blood

    def silence(self) -> None:
        self.silenced = True


class HSC(MarrowCell):
    """A long-term haematopoietic stem cell.

    In a niche it rests (quiescent) until it activates; an active HSC divides,
    and each division gives a daughter HSC with probability ``self_renewal``,
    otherwise a daughter of the differentiated type (an MPP). After dividing in
    its niche it goes back to rest. Off a niche it cycles and loses niche
    affinity (Roeder & Loeffler, Exp Hematol 2002); once the affinity falls
    below ``affinity_min`` it commits to the differentiated type.
    """

    def __init__(self, model: ReferenceModel, *, quiescent: bool = False, affinity: float = 1.0,
                 **inherited) -> None:
        super().__init__(model, model.hsc_index, **inherited)
        self.quiescent = quiescent
        self.affinity = affinity

    def settle(self, site: Cell) -> None:
        """Occupy a site; in a niche the HSC rests and holds full affinity again."""
        super().settle(site)
        if site.niche:
            self.quiescent = True
            self.affinity = 1.0
        else:
            self.quiescent = False

    def enter_blood(self) -> None:
        self.quiescent = False
        super().enter_blood()

    def step(self) -> None:
        if self._skip():
            return
        model = self.model
        if self.cell.niche:
            state = rates.HSC_RESTING if self.quiescent else rates.HSC_ACTIVE
        else:
            state = rates.HSC_OFF_NICHE
            self.affinity *= model.affinity_decay
            if self.affinity < model.affinity_min:
                self.commit()
                return  # committing is this step's event
        event = model.draw_event(self.type_index, state, self.transgene_state)
        if event == rates.DIE:
            self.die()
        elif event == rates.SILENCE:
            self.silence()
        elif event == rates.ACTIVATE:
            self.quiescent = False
        elif event == rates.EGRESS:
            self.enter_blood()
        elif event == rates.DIVIDE:
            self.divide()

    def divide(self) -> None:
        """Self-renew or make a progenitor daughter; it needs a free neighbour (or goes to the blood)."""
        model = self.model
        self_renews = model.random.random() < model.self_renewal
        # niches hold HSCs: a progenitor daughter cannot take a niche site
        if model.placement == "pool":
            site = None
        else:
            site = model.random_empty_neighbour(self.cell, niche_allowed=self_renews)
            if site is None:
                return  # no room: the division waits
        if self_renews:
            # the daughter keeps its mother's (possibly decayed) affinity until it finds a niche
            daughter: MarrowCell = HSC(model, affinity=self.affinity, **self.inherited())
        else:
            t = model.hsc_differentiated_index
            daughter = Progenitor(model, t, divisions_left=model.max_divisions[t], **self.inherited())
        if site is None:
            daughter.enter_blood()
        else:
            daughter.settle(site)
        if self.cell.niche:
            self.quiescent = True  # back to rest in its niche

    def commit(self) -> None:
        """Too little niche affinity left: become the differentiated type where it stands."""
        model = self.model
        site = self.cell
        t = model.hsc_differentiated_index
        progenitor = Progenitor(model, t, divisions_left=model.max_divisions[t], **self.inherited())
        self.die()  # the HSC agent ends; the same cell lives on as a progenitor
        progenitor.settle(site)


class Progenitor(MarrowCell):
    """A multipotent or committed progenitor (MPP, GMP, MkP, ...).

    It divides at its type's rate; each of the two daughters draws its type
    from the type's ``differentiation`` probabilities (a daughter that keeps
    the type has one division fewer left, a new type starts with its own
    ``max_divisions``). With no divisions left, at its next division event a
    terminal progenitor leaves the marrow into its mature lineage (the
    amplifying divisions happen off the lattice, see :mod:`engraft.tally`),
    and a non-terminal one differentiates in place into another type.
    """

    def __init__(self, model: ReferenceModel, type_index: int, *, divisions_left: int, **inherited) -> None:
        super().__init__(model, type_index, **inherited)
        self.divisions_left = divisions_left

    def step(self) -> None:
        if self._skip():
            return
        event = self.model.draw_event(self.type_index, rates.HSC_RESTING, self.transgene_state)
        if event == rates.DIE:
            self.die()
        elif event == rates.SILENCE:
            self.silence()
        elif event == rates.DIVIDE:
            if self.divisions_left > 0:
                self.divide()
            elif self.model.lineage_of[self.type_index] is not None:
                self.exit_to_lineage()
            else:
                self.differentiate_in_place()

    def divide(self) -> None:
        model = self.model
        if model.placement == "pool":
            site = None
        else:
            site = model.random_empty_neighbour(self.cell, niche_allowed=False)
            if site is None:
                return  # no room: the division waits
        mother_type = self.type_index
        first = model.draw_daughter_type(mother_type)
        second = model.draw_daughter_type(mother_type)
        daughter = Progenitor(model, second, divisions_left=self._divisions_for(second),
                              **self.inherited())
        self.divisions_left = self._divisions_for(first)
        self.type_index = first
        if site is None:
            daughter.enter_blood()
        else:
            daughter.settle(site)

    def _divisions_for(self, daughter_type: int) -> int:
        """Divisions left of a daughter: one fewer if it keeps the type, else its new type's maximum."""
        if daughter_type == self.type_index:
            return self.divisions_left - 1
        return self.model.max_divisions[daughter_type]

    def exit_to_lineage(self) -> None:
        """Leave the marrow: the mature compartment counts this cell's output."""
        self.model.count_exit(self)
        self.die()

    def differentiate_in_place(self) -> None:
        """A non-terminal progenitor with no divisions left becomes one of its other types."""
        new_type = self.model.draw_exit_type(self.type_index)
        self.type_index = new_type
        self.divisions_left = self.model.max_divisions[new_type]

    def exit_quantities(self, expression_weight) -> tuple[float, float, float, float, float]:
        """(cells, graft cells, transduced cells, vector copies, expression units) of this exit."""
        transduced = self.vcn > 0
        expression = expression_weight[self.vcn] if transduced and not self.silenced else 0.0
        return (1.0, float(self.graft), float(transduced), float(self.vcn), float(expression))


__all__ = ["HSC", "MarrowCell", "Progenitor"]
