// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

import {Initializable} from "@openzeppelin/contracts/proxy/utils/Initializable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IRevenueVault} from "./interfaces/IRevenueVault.sol";

/// @title RevenueVault — one asset's pull splitter
/// @notice Every payment for an asset (license purchase, x402 transfer, channel claim) is a plain
/// token transfer into its vault. Payees and shares are fixed at creation. For any ERC-20 a payee
/// can claim `shares × (balance + totalReleased) / TOTAL_SHARES − released`; anyone may `release`
/// to a payee. A payee can be another asset's vault: releasing to it forwards royalties one level
/// up the lineage. No loop over payees runs on any payment or release.
/// @dev Deployed once as an implementation; each asset gets an EIP-1167 clone initialised by the
/// Marketplace. Rounding is always down, so the total released never exceeds the total received.
contract RevenueVault is IRevenueVault, Initializable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    // ---------------------------------------------------------------- storage

    /// @notice Denominator of every share.
    uint256 public constant TOTAL_SHARES = 100_000_000;

    /// @notice The asset whose revenue this vault splits.
    uint256 public assetId;
    /// @notice The Marketplace that created the vault.
    address public marketplace;
    /// @notice Share of each payee, out of TOTAL_SHARES.
    mapping(address payee => uint256 shares) public sharesOf;
    /// @notice Total of `token` sent out so far.
    mapping(address token => uint256 amount) public totalReleased;
    /// @notice Amount of `token` sent to `payee` so far.
    mapping(address token => mapping(address payee => uint256 amount)) public released;
    /// @dev Distinct payees, in order of first appearance (for views only).
    address[] private _payees;

    // ---------------------------------------------------------------- constructor

    /// @dev The implementation itself can never be initialised; clones are.
    constructor() {
        _disableInitializers();
    }

    // ---------------------------------------------------------------- external

    /// @inheritdoc IRevenueVault
    function initialize(uint256 assetId_, address[] calldata payees_, uint256[] calldata shares_)
        external
        initializer
    {
        if (payees_.length == 0 || payees_.length != shares_.length) {
            revert InvalidPayees(payees_.length, shares_.length);
        }
        uint256 total;
        for (uint256 i; i < payees_.length; ++i) {
            address payee = payees_[i];
            if (payee == address(0)) revert ZeroAddressPayee(i);
            if (shares_[i] == 0) revert ZeroPayeeShare(payee);
            if (sharesOf[payee] == 0) _payees.push(payee);
            sharesOf[payee] += shares_[i];
            total += shares_[i];
        }
        if (total != TOTAL_SHARES) revert VaultSharesDoNotSum(total, TOTAL_SHARES);
        assetId = assetId_;
        marketplace = msg.sender;
        emit VaultInitialized(assetId_, msg.sender, _payees.length);
    }

    /// @inheritdoc IRevenueVault
    function release(address token, address payee) external nonReentrant returns (uint256 amount) {
        amount = claimable(token, payee);
        if (amount == 0) {
            if (sharesOf[payee] == 0) revert NotAPayee(payee);
            revert NothingToRelease(token, payee);
        }
        released[token][payee] += amount;
        totalReleased[token] += amount;
        IERC20(token).safeTransfer(payee, amount);
        emit PaymentReleased(token, payee, amount);
    }

    /// @inheritdoc IRevenueVault
    function payees() external view returns (address[] memory accounts, uint256[] memory shares) {
        accounts = _payees;
        shares = new uint256[](accounts.length);
        for (uint256 i; i < accounts.length; ++i) {
            shares[i] = sharesOf[accounts[i]];
        }
    }

    /// @inheritdoc IRevenueVault
    function totalReceived(address token) public view returns (uint256) {
        return IERC20(token).balanceOf(address(this)) + totalReleased[token];
    }

    /// @inheritdoc IRevenueVault
    function claimable(address token, address payee) public view returns (uint256) {
        uint256 due = (totalReceived(token) * sharesOf[payee]) / TOTAL_SHARES;
        uint256 already = released[token][payee];
        return due > already ? due - already : 0;
    }
}
