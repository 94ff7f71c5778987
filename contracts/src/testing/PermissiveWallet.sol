// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";

/// @title PermissiveWallet — an ERC-1271 contract wallet that accepts every signature (test-only)
/// @notice Its deployer makes it call anything through `execute`. Because `isValidSignature`
/// approves any digest, whoever may bind an agent wallet can bind this one without anybody's
/// consent: the wallet an approved operator would bind to capture an owner's spend permission.
contract PermissiveWallet is IERC1271 {
    // ---------------------------------------------------------------- errors

    /// @notice Only the deployer may make the wallet call out.
    error NotOwner(address caller);

    // ---------------------------------------------------------------- events

    /// @notice The wallet called `target` with `data`.
    event Executed(address indexed target, bytes data);

    // ---------------------------------------------------------------- storage

    /// @notice The account that controls this wallet.
    address public immutable owner;

    // ---------------------------------------------------------------- constructor

    constructor() {
        owner = msg.sender;
    }

    // ---------------------------------------------------------------- external

    /// @notice Calls `target` with `data` from this wallet; a revert bubbles up unchanged.
    function execute(address target, bytes calldata data) external returns (bytes memory result) {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        result = Address.functionCall(target, data);
        emit Executed(target, data);
    }

    // ---------------------------------------------------------------- views

    /// @notice ERC-1271: every signature of every digest is valid.
    function isValidSignature(bytes32, bytes memory) external pure returns (bytes4) {
        return IERC1271.isValidSignature.selector;
    }
}
