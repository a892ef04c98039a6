// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice A hostile ERC-20 for tests: every transfer out of `taxed` also burns a fee of 1% from
/// the sender's balance, on top of the amount sent (a fee on outgoing transfers).
contract FeeOnTransferToken is ERC20 {
    address public taxed;

    constructor() ERC20("Fee on transfer", "FEE") {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function tax(address account) external {
        taxed = account;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (from == taxed && from != address(0) && to != address(0)) {
            super._update(from, address(0), value / 100);
        }
    }
}
